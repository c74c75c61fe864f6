"""Fetching standard datasets: canonical sources, checksums, a user-set cache, atomic writes, clear offline errors.

A file is looked for first where the user said (``root``), then downloaded there from each mirror in turn with a
progress bar. The download goes to a temporary file in the same directory and is renamed into place only after its
checksum matched, so an interrupted or corrupt download never leaves a file that later counts as data.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from dlbench.core.errors import DlbenchError

DATA_DIR_ENV = "DLBENCH_DATA_DIR"
OFFLINE_ENV = "DLBENCH_OFFLINE"


@dataclass(frozen=True)
class Remote:
    """One file of a dataset as its publisher serves it."""

    filename: str
    urls: tuple[str, ...]
    """Mirrors, tried in order; each is the full URL of the file."""
    md5: str | None = None
    sha256: str | None = None


def data_root(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """Where ``dataset``'s files live: ``root`` if given, else ``$DLBENCH_DATA_DIR/<dataset>``, else
    ``~/.cache/dlbench/<dataset>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "dlbench"
    return Path(base).expanduser() / dataset


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> str | None:
    """None if ``path`` matches the remote's checksums, else a sentence saying what differs."""
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected and (actual := file_digest(path, algorithm)) != expected:
            return f"{algorithm} is {actual}, expected {expected}"
    return None


def _progress(total: int | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)


def _download(url: str, dest: Path, timeout: float, desc: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "dlbench"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) URLs from our tables)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        received = 0
        with dest.open("wb") as out, _progress(total, desc) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client ends a read quietly when the server drops the connection; a short file must not pass as whole
    # (a Remote without a checksum would otherwise accept it).
    if total is not None and received != total:
        raise OSError(f"connection closed after {received} of {total} bytes")


def offline() -> bool:
    """Whether downloads are switched off: ``DLBENCH_OFFLINE`` set to anything but empty, 0, false or no."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fetch(dataset: str, remote: Remote, root: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """Path of ``remote``'s file under the dataset's root, downloading and verifying it first if it is missing.

    A file already present is trusted as the user's own copy (copies repacked by other distributions differ in
    their compressed bytes but not in content); the format parsers validate it when it is read.
    """
    directory = data_root(dataset, root)
    path = directory / remote.filename
    if path.is_file():
        return path
    where = f"Put {remote.filename} in {directory} (or pass --data.root DIR holding it)"
    if offline():
        raise DlbenchError(f"{dataset}: {path} is missing and downloads are off ({OFFLINE_ENV} is set). {where}; "
                           f"it is published at {remote.urls[0]}.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DlbenchError(f"{dataset}: cannot create the data directory {directory} ({err.strerror}). "
                           f"Set {DATA_DIR_ENV} or --data.root to a writable directory.") from None
    failures = []
    for url in remote.urls:
        tmp: Path | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=directory)
            os.close(fd)
            tmp = Path(tmp_name)
            _download(url, tmp, timeout, remote.filename)
            problem = verify(tmp, remote)
            if problem:
                failures.append(f"{url}: checksum mismatch ({problem})")
                continue
            os.replace(tmp, path)  # atomic on one file system: the file appears whole or not at all
            return path
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    raise DlbenchError(f"{dataset}: could not download {remote.filename} ({'; '.join(failures)}). {where}; "
                       f"it is published at {remote.urls[0]}.")


def _safe_target(dest: Path, name: str) -> Path:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DlbenchError(f"archive member {name!r} would be written outside {dest}; refusing to extract it. "
                           f"The archive is corrupt or malicious: delete it and download it again.")
    return target


def extract(archive: Path, dest: Path) -> Path:
    """Extract a .zip, .tar, .tar.gz or .tgz into ``dest``, refusing members that would land outside it (absolute
    paths, ``..``, links pointing out). Extraction goes to a temporary folder renamed into place when complete."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as err:
        raise DlbenchError(f"cannot extract {archive}: {dest.parent} is not writable ({err.strerror}). Extract the "
                           f"archive yourself into a writable folder and point --data.root there, or set "
                           f"{DATA_DIR_ENV} to a writable directory.") from None
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    _safe_target(tmp, member.filename)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _safe_target(tmp, member.name)
                    if member.issym():  # relative to the link's own folder
                        _safe_target(tmp, os.path.join(os.path.dirname(member.name), member.linkname))
                    elif member.islnk():  # a hard link names another member, relative to the archive's top
                        _safe_target(tmp, member.linkname)
                    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                        raise DlbenchError(f"archive {archive} holds a special file {member.name!r}; refusing it.")
                tf.extractall(tmp, filter="data")
        else:
            raise DlbenchError(f"{archive} is not a zip or tar archive (or it is truncated). Delete it and "
                               f"download it again.")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DlbenchError(f"cannot extract {archive} into {dest}: {err}. If the archive is corrupt or truncated, "
                           f"delete it and download it again; otherwise check the free space and permissions "
                           f"there.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
