"""Discovery of plugins and datasets from installed distributions' entry points.

Reads metadata and imports only the small spec modules (which import no torch). A spec that fails to import or is
not a valid :class:`~dlbench.core.spec.Plugin` is kept as a *broken* entry with a one-line reason, so one bad
distribution never hides the others.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import Distribution, EntryPoint, distributions
from pathlib import PurePath

from dlbench.core.errors import DlbenchError
from dlbench.core.spec import Dataset, Plugin

PLUGINS = "dlbench.plugins"
DATASETS = "dlbench.datasets"
DISABLE_ENV = "DLBENCH_DISABLE_PLUGIN_AUTOLOAD"
"""Set to any non-empty value to load only dlbench's own built-ins, as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD."""
OWN_DIST = "dlbench"
_SPEC_TYPES = {PLUGINS: Plugin, DATASETS: Dataset}


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation, so ``My_Plugins`` and ``my-plugins`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Entry:
    """One registration: a name from one distribution, resolved to its spec or to the reason it is broken."""

    group: str
    name: str
    value: str
    dist: str
    version: str
    location: str
    spec: Plugin | Dataset | None
    error: str | None

    @property
    def qualified(self) -> str:
        """``dist:name``, which picks this entry when two distributions register the same name."""
        return f"{normalize_dist(self.dist)}:{self.name}"

    @property
    def broken(self) -> bool:
        return self.spec is None


def _load(group: str, ep: EntryPoint) -> tuple[Plugin | Dataset | None, str | None]:
    try:
        spec = ep.load()
    except BaseException as err:  # a plugin's import may raise anything, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        return None, f"import failed: {type(err).__name__}: {_one_line(err)}"
    expected = _SPEC_TYPES[group]
    if not isinstance(spec, expected):
        return None, f"{ep.value} is a {type(spec).__name__}, not a dlbench.{expected.__name__}"
    if spec.name != ep.name:
        return None, f"entry point is named {ep.name!r} but its spec says name={spec.name!r}"
    return spec, None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else repr(err)


def _dist_location(dist: Distribution) -> str:
    try:
        return str(dist.locate_file(""))
    except Exception:  # some finders cannot locate files; the origin is then unknown, not an error
        return "?"


@cache
def entries(group: str) -> tuple[Entry, ...]:
    """Every registration in ``group`` from every installed distribution, sorted by name then distribution."""
    only_own = bool(os.environ.get(DISABLE_ENV))
    found: dict[tuple[str, str], Entry] = {}
    for dist in distributions():
        dist_name = dist.metadata["Name"] or "?"
        if only_own and normalize_dist(dist_name) != OWN_DIST:
            continue
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            key = (normalize_dist(dist_name), ep.name)
            if key in found:  # the same distribution seen twice on sys.path: the first one wins, as for imports
                continue
            spec, error = _load(group, ep)
            found[key] = Entry(group, ep.name, ep.value, dist_name, dist.version, _dist_location(dist), spec, error)
    return tuple(sorted(found.values(), key=lambda e: (e.name, normalize_dist(e.dist))))


def _noun(group: str) -> str:
    return "plugin" if group == PLUGINS else "dataset"


def resolve(group: str, name: str) -> Entry:
    """The one working entry that ``name`` (or ``dist:name``) names, or a :class:`DlbenchError` that says why not."""
    noun = _noun(group)
    all_entries = entries(group)
    dist_part, sep, bare = name.rpartition(":")
    if sep:
        matches = [e for e in all_entries if e.name == bare and normalize_dist(e.dist) == normalize_dist(dist_part)]
    else:
        matches = [e for e in all_entries if e.name == name]
    if not matches:
        raise DlbenchError(_unknown_message(group, name, all_entries))
    if len(matches) > 1:
        providers = ", ".join(f"{e.dist} {e.version}" for e in matches)
        picks = " or ".join(f"'{e.qualified}'" for e in matches)
        raise DlbenchError(
            f"{noun} name {name!r} is ambiguous: it is registered by {len(matches)} distributions ({providers}). "
            f"Pick one explicitly, e.g. --{'model' if group == PLUGINS else 'data'} {picks}, "
            f"or uninstall one of them."
        )
    entry = matches[0]
    if entry.broken:
        raise DlbenchError(
            f"{noun} {entry.name!r} from distribution {entry.dist} {entry.version} is broken: {entry.error}. "
            f"Fix or reinstall {entry.dist} (pip install --force-reinstall {entry.dist}); other {noun}s are unaffected."
        )
    return entry


def _unknown_message(group: str, name: str, all_entries: tuple[Entry, ...]) -> str:
    noun = _noun(group)
    names = sorted({e.name for e in all_entries})
    close = difflib.get_close_matches(name.rpartition(":")[2], names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    disabled = (
        f" Third-party {noun}s are not loaded because {DISABLE_ENV} is set." if os.environ.get(DISABLE_ENV) else ""
    )
    listing = "dlbench list" if group == PLUGINS else "dlbench list --datasets"
    return f"unknown {noun} {name!r}.{hint} Run '{listing}' to see every installed {noun}.{disabled}"


def plugin(name: str) -> Plugin:
    spec = resolve(PLUGINS, name).spec
    assert isinstance(spec, Plugin)
    return spec


def dataset(name: str) -> Dataset:
    spec = resolve(DATASETS, name).spec
    assert isinstance(spec, Dataset)
    return spec


def entry_for_model_class(model_class_path: str) -> Entry | None:
    """The working plugin whose model is ``pkg.mod.Class`` (a config file's ``class_path``), if any."""
    for e in entries(PLUGINS):
        if e.spec is not None and e.spec.model.replace(":", ".") == model_class_path:
            return e
    return None


def dataset_label(data_class: str, data_hparams: dict | None = None) -> str:
    """How a person names a run's data: the file it read (``--data.path prices.csv`` -> ``prices.csv``), else the
    registry name of the dataset or plugin whose datamodule it is (``sunspots``, ``mnist``), else the class's name.
    ``data_class`` is a class path (``pkg.module.Class`` or ``pkg.module:Class``) or, from older runs, a bare class
    name."""
    path = (data_hparams or {}).get("path")
    if isinstance(path, str) and path.strip():
        return PurePath(path.strip()).name or path
    wanted = data_class.replace(":", ".")
    bare = "." not in wanted

    def same(ref: str) -> bool:
        ref = ref.replace(":", ".")
        return ref.rpartition(".")[2] == wanted if bare else ref == wanted

    for entry in entries(DATASETS):
        if entry.spec is not None and same(entry.spec.datamodule):
            return entry.name
    for entry in entries(PLUGINS):
        if entry.spec is not None and same(entry.spec.datamodule):
            return entry.spec.data_name
    return wanted.rpartition(".")[2]
