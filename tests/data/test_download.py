"""``fetch`` against a real HTTP server on 127.0.0.1, and ``extract`` against hostile archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dlbench.core.errors import DlbenchError
from dlbench.data.download import Remote, data_root, extract, fetch

PAYLOAD = bytes(range(256)) * 400  # 100 KiB: several read chunks


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` by name; ``/drop/NAME`` promises the whole file, sends half and hangs up."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        dropping = self.path.startswith("/drop/")
        name = self.path.removeprefix("/drop/").lstrip("/")
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if dropping else data)
        self.close_connection = dropping

    def log_message(self, format, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # a proxy configured on the machine must not intercept 127.0.0.1
    monkeypatch.delenv("DLBENCH_OFFLINE", raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests = {"data.bin": PAYLOAD}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{path}"


def remote(*urls: str, md5: str | None = None, sha256: str | None = None) -> Remote:
    return Remote("data.bin", tuple(urls), md5=md5, sha256=sha256)


MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_checksums(server, tmp_path):
    path = fetch("toy", remote(url(server, "data.bin"), md5=MD5, sha256=SHA256), root=tmp_path / "toy")
    assert path == tmp_path / "toy" / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == ["data.bin"]  # no temporary file left
    assert server.requests == ["/data.bin"]


def test_default_root_is_the_data_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(tmp_path / "cache"))
    assert data_root("toy") == tmp_path / "cache" / "toy"
    path = fetch("toy", remote(url(server, "data.bin"), md5=MD5))
    assert path == tmp_path / "cache" / "toy" / "data.bin" and path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("field", ["md5", "sha256"])
def test_checksum_mismatch_leaves_nothing(server, tmp_path, field):
    wrong = {field: "0" * (32 if field == "md5" else 64)}
    with pytest.raises(DlbenchError, match=f"checksum mismatch \\({field} is .*, expected 0+\\)") as err:
        fetch("toy", remote(url(server, "data.bin"), **wrong), root=tmp_path)
    assert "published at" in str(err.value) and str(tmp_path) in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("md5", [MD5, None], ids=["with_checksum", "without_checksum"])
def test_connection_dropped_mid_file_leaves_nothing(server, tmp_path, md5):
    with pytest.raises(DlbenchError, match="could not download data.bin"):
        fetch("toy", remote(url(server, "drop/data.bin"), md5=md5), root=tmp_path)
    assert server.requests == ["/drop/data.bin"]
    assert list(tmp_path.iterdir()) == []


def test_next_mirror_after_a_failure(server, tmp_path):
    mirrors = (url(server, "drop/data.bin"), url(server, "missing.bin"), url(server, "data.bin"))
    path = fetch("toy", Remote("data.bin", mirrors, md5=MD5), root=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/drop/data.bin", "/missing.bin", "/data.bin"]


def test_not_found_everywhere(server, tmp_path):
    with pytest.raises(DlbenchError, match="missing.bin: Not Found") as err:
        fetch("toy", remote(url(server, "missing.bin")), root=tmp_path)
    assert f"Put data.bin in {tmp_path}" in str(err.value)


def test_existing_file_is_used_without_network(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"the user's own copy")
    # Trusted as it is (repacked copies differ from the official bytes); the format parser validates it later.
    path = fetch("toy", remote(url(server, "data.bin"), md5=MD5), root=tmp_path)
    assert path.read_bytes() == b"the user's own copy"
    assert server.requests == []


def test_offline_says_where_to_put_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "1")
    with pytest.raises(DlbenchError) as err:
        fetch("toy", remote(url(server, "data.bin"), md5=MD5), root=tmp_path / "toy")
    message = str(err.value)
    assert "DLBENCH_OFFLINE" in message and f"Put data.bin in {tmp_path / 'toy'}" in message
    assert url(server, "data.bin") in message
    assert server.requests == [] and not (tmp_path / "toy").exists()


def test_offline_zero_means_online(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_OFFLINE", "0")
    assert fetch("toy", remote(url(server, "data.bin"), md5=MD5), root=tmp_path).read_bytes() == PAYLOAD


def test_unwritable_root(server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(DlbenchError, match="cannot create the data directory"):
        fetch("toy", remote(url(server, "data.bin")), root=blocker / "sub")


# --- extract -----------------------------------------------------------------------------------------------------


def tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            data = b"x" * info.size if info.isfile() else None
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_extract_tar_and_zip(tmp_path):
    archive = tar_with(tmp_path / "good.tar.gz", file_member("top/a.txt"), file_member("top/sub/b.txt"),
                       link_member("top/link", "a.txt"))
    out = extract(archive, tmp_path / "out")
    assert (out / "top" / "a.txt").read_bytes() == b"xxx" and (out / "top" / "sub" / "b.txt").is_file()
    assert (out / "top" / "link").resolve() == (out / "top" / "a.txt").resolve()
    zipped = tmp_path / "good.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("top/c.txt", "zip")
    assert (extract(zipped, tmp_path / "zout") / "top" / "c.txt").read_text() == "zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tar.gz", "good.zip", "out", "zout"]


@pytest.mark.parametrize("member", [
    file_member("../escape.txt"),
    file_member("top/../../escape.txt"),
    file_member("/tmp/dlbench-absolute-escape.txt"),
    link_member("top/link", "../../escape.txt"),
    link_member("top/link", "/etc/passwd"),
    link_member("top/hard", "../escape.txt", kind=tarfile.LNKTYPE),
], ids=["dotdot", "nested_dotdot", "absolute", "symlink_out", "symlink_absolute", "hardlink_out"])
def test_extract_refuses_tar_members_outside(tmp_path, member):
    archive = tar_with(tmp_path / "bad.tar.gz", file_member("top/ok.txt"), member)
    with tarfile.open(archive) as tf:
        assert member.name in tf.getnames()  # the hostile name really is in the archive
    with pytest.raises(DlbenchError, match="outside .*refusing to extract it"):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]  # nothing extracted, no temp folder
    assert not Path("/tmp/dlbench-absolute-escape.txt").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs-escape.txt"])
def test_extract_refuses_zip_members_outside(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/ok.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "escape")
    assert name in zipfile.ZipFile(archive).namelist()
    with pytest.raises(DlbenchError, match="outside .*refusing"):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_extract_refuses_special_files(tmp_path):
    fifo = tarfile.TarInfo("top/fifo")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(DlbenchError, match="special file 'top/fifo'"):
        extract(tar_with(tmp_path / "fifo.tar.gz", fifo), tmp_path / "out")


def test_extract_not_an_archive(tmp_path):
    path = tmp_path / "data.tar.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DlbenchError, match="not a zip or tar archive"):
        extract(path, tmp_path / "out")


def test_extract_truncated_archive_replaces_nothing(tmp_path):
    archive = tar_with(tmp_path / "cut.tar.gz", *(file_member(f"top/{i}.txt") for i in range(200)))
    archive.write_bytes(archive.read_bytes()[:-200])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.txt").write_text("kept")
    with pytest.raises(DlbenchError, match="corrupt or truncated"):
        extract(archive, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tar.gz", "out"]


def test_extract_into_unwritable_place(tmp_path):
    archive = tar_with(tmp_path / "ok.tar.gz", file_member("top/a.txt"))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(DlbenchError, match="not writable"):
        extract(archive, blocker / "out")
