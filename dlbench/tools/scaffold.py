"""``dlbench new-plugin NAME [DIR]``: a new third-party plugin package, complete and passing its own tests.

The package is what a third party publishes: a distribution ``dlbench-<name>`` with the entry point in the group
``dlbench.plugins``, the spec in ``src/dlbench_<name>/__init__.py`` (no torch), a real model and data module that
keep the plugin contract, and tests built on :mod:`dlbench.testing`. The files are the templates in
``dlbench/templates/``. This module imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from dlbench.core import registry
from dlbench.core.conventions import VERSION as __version__
from dlbench.core.errors import DlbenchError
from dlbench.core.spec import NAME

# Where each template goes in the new package; ``{package}`` and ``{name}`` are filled in.
LAYOUT: dict[str, str] = {
    "pyproject.toml": "pyproject.toml.txt",
    "README.md": "README.md.txt",
    ".gitignore": "gitignore.txt",
    "src/{package}/__init__.py": "spec.py.txt",
    "src/{package}/model.py": "model.py.txt",
    "src/{package}/data.py": "data.py.txt",
    "tests/test_{name}.py": "test_plugin.py.txt",
}


@dataclass(frozen=True)
class Names:
    """The names a plugin called ``name`` goes by."""

    name: str
    """Registry name: ``dlbench fit --model NAME``."""

    @property
    def package(self) -> str:
        """Import package; prefixed so that it never claims a generic top-level name in site-packages."""
        return self.name if self.name.startswith("dlbench_") else f"dlbench_{self.name}"

    @property
    def dist(self) -> str:
        """Distribution name on PyPI and in ``dlbench list``."""
        return self.package.replace("_", "-")

    @property
    def model_class(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_") if part) + "Classifier"

    def substitutions(self) -> dict[str, str]:
        return {"name": self.name, "package": self.package, "dist": self.dist, "model_class": self.model_class,
                "dlbench_version": __version__}


def check_name(name: str) -> Names:
    """``name`` as a plugin name, or a DlbenchError saying what is wrong with it."""
    if not NAME.match(name):
        suggestion = "_".join(part for part in "".join(c if c.isalnum() else "_" for c in name.lower()).split("_")
                              if part)
        if suggestion and not suggestion[0].isalpha():
            suggestion = f"my_{suggestion}"
        hint = f", e.g. {suggestion!r}" if suggestion and NAME.match(suggestion) else ""
        raise DlbenchError(f"plugin name {name!r} is not allowed: use lower-case letters, digits and '_', starting "
                           f"with a letter{hint}. It is what users type after --model.")
    taken = [e for e in registry.entries(registry.PLUGINS) if e.name == name]
    if taken:
        raise DlbenchError(f"plugin name {name!r} is already registered by {taken[0].dist} {taken[0].version}; a "
                           f"second plugin of that name would make --model {name} ambiguous. Choose another name.")
    return Names(name)


def render(names: Names) -> dict[str, str]:
    """The new package's files: relative path -> text."""
    templates = files("dlbench.tools.templates")
    values = names.substitutions()
    return {path.format(package=names.package, name=names.name):
            Template(templates.joinpath(template).read_text(encoding="utf-8")).substitute(values)
            for path, template in LAYOUT.items()}


def create(name: str, directory: str | Path | None = None) -> Path:
    """Write the package for plugin ``name`` into ``directory`` (``./dlbench-<name>`` by default) and return it.

    Refuses a directory that exists and is not empty, so nothing of the user's is ever overwritten.
    """
    names = check_name(name)
    root = Path(directory) if directory is not None else Path(names.dist)
    if root.exists() and not root.is_dir():
        raise DlbenchError(f"{root} exists and is a file. Give a new directory: dlbench new-plugin {name} DIR")
    if root.is_dir() and any(root.iterdir()):
        raise DlbenchError(f"directory {root} already exists and is not empty; dlbench new-plugin never overwrites "
                           f"files. Give a new or empty directory: dlbench new-plugin {name} DIR")
    content = render(names)
    try:
        for relative, text in content.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise DlbenchError(f"cannot write the new package into {root}: {err.strerror} ({err.filename}). Choose a "
                           f"writable directory.") from None
    return root


def cmd_new_plugin(args: argparse.Namespace) -> int:
    root = create(args.name, args.dir)
    names = Names(args.name)
    print(f"Created {names.dist}, the plugin {names.name!r}, in {root}/:")
    for relative in sorted(LAYOUT):
        print(f"  {relative.format(package=names.package, name=names.name)}")
    print(f"""
Next:
  pip install -e {root}
  dlbench list                         # {names.name}, provided by {names.dist} 0.1.0
  dlbench fit --model {names.name}
  python -m pytest {root / 'tests'}""")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("new-plugin", help="write a new third-party plugin package",
                              description="Write a complete plugin package (model, data, spec, tests, README) "
                                          "that installs with pip and passes its own tests.")
    p.add_argument("name", help="plugin name: lower-case letters, digits and '_', e.g. my_net")
    p.add_argument("dir", nargs="?", default=None, help="where to write it (default: ./dlbench-<name>)")
    p.set_defaults(func=cmd_new_plugin)
    return p
