"""dlbench's built-in plugins, one package each. Installed as ``dlbench_plugins``.

Each package's ``__init__`` holds only its :class:`dlbench.Plugin` spec (no torch import); ``model.py`` and
``data.py`` hold the LightningModule and the LightningDataModule.
"""
