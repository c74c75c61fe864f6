"""dlbench: deep-learning architectures as pip-installable Lightning plugins, run and compared from one command.

Importing this package imports no torch: plugin specs and discovery stay fast.
"""

from dlbench.plugin import DATA_KINDS, Dataset, Plugin

__all__ = ["DATA_KINDS", "Dataset", "Plugin", "__version__"]
__version__ = "0.1.0"
