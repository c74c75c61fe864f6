"""Package list only; everything else is in pyproject.toml.

The built-in plugins live in ``plugins/`` in the repository and install as ``dlbench_plugins`` so that dlbench never
claims the generic top-level name ``plugins`` in site-packages.
"""

from setuptools import find_packages, setup

builtin = ["dlbench_plugins"] + [f"dlbench_plugins.{p}" for p in find_packages("plugins")]
setup(
    packages=find_packages(include=["dlbench", "dlbench.*"]) + builtin,
    package_dir={"dlbench_plugins": "plugins"},
)
