"""Text templates for ``dlbench new-plugin``: the files of a new third-party plugin package.

Each ``*.txt`` file here is a :class:`string.Template` (``$name``, ``$package``, ...); :mod:`dlbench.tools.scaffold`
fills them in and says where each one goes. They are ``.txt`` so that no tool mistakes them for dlbench's own
modules, and so that the package data rule in pyproject.toml ships them.
"""
