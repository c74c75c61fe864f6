"""The plugin contract: what an entry point in ``dlbench.plugins`` or ``dlbench.datasets`` resolves to.

This module imports no torch, so discovering and listing plugins stays fast and a broken plugin cannot take the
others down. Classes are named by ``"module:Class"`` strings and imported only when a plugin runs.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

# What a datamodule of each data kind exposes as attributes right after ``__init__``. Any model ``__init__``
# argument with one of these names receives the datamodule's value through a LightningCLI argument link, so sizes
# that depend on the data (classes, channels, vocabulary, ...) never have to be typed twice.
DATA_KINDS: dict[str, tuple[str, ...]] = {
    "series": ("n_features", "window", "target_mean", "target_std"),
    "images": ("num_classes", "in_channels", "image_size"),
    "sequence": ("num_classes", "input_size", "seq_len"),
    "text": ("num_classes", "vocab_size", "max_len", "pad_index"),
    "translation": ("src_vocab_size", "tgt_vocab_size", "max_len", "pad_index", "bos_index", "eos_index",
                    "unk_index"),
    "graph": ("num_features", "num_classes"),
    "audio": ("num_classes", "n_mels", "n_frames", "class_names"),
    "detection": ("num_classes", "image_size", "class_names"),
    "tabular": ("num_features", "pos_weight"),
}

_CLASS_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def import_ref(ref: str) -> Any:
    """Import ``"package.module:Attr"`` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None


def import_class(dotted: str, what: str) -> Any:
    """The class at ``"package.module.Class"`` (a config file's class path); a DlbenchError saying which plugin to
    install when it cannot be imported. ``what`` names it in the message ("model", "data module")."""
    from dlbench.core.errors import DlbenchError

    module, _, name = dotted.rpartition(".")
    try:
        return import_ref(f"{module}:{name}")
    except (ImportError, ValueError) as err:
        raise DlbenchError(f"cannot import the {what} class {dotted} ({err}). Install the plugin that provides it "
                           f"('dlbench list' shows what is installed).") from None


def class_path(ref: str) -> str:
    """``"pkg.mod:Class"`` -> ``"pkg.mod.Class"``, the form LightningCLI configs use."""
    return ref.replace(":", ".")


def _check_common(kind_of: str, name: str, data_kind: str, refs: dict[str, str]) -> None:
    if not NAME.match(name):
        raise ValueError(f"{kind_of} name {name!r} must be lower case letters, digits and '_', starting with a letter")
    if not NAME.match(data_kind):
        raise ValueError(f"{kind_of} {name!r}: data_kind {data_kind!r} must be a lower-case identifier such as "
                         f"{', '.join(DATA_KINDS)}")
    for what, ref in refs.items():
        if not _CLASS_REF.match(ref):
            raise ValueError(f"{kind_of} {name!r}: {what} must be a 'package.module:Class' string, got {ref!r}")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A dataset any model of the same ``data_kind`` can train on (``dlbench fit --model cnn --data mnist``)."""

    name: str
    """Registry name, e.g. ``"fashion_mnist"``."""
    summary: str
    """One line: what the data is."""
    datamodule: str
    """The LightningDataModule as ``"module:Class"``."""
    data_kind: str
    """What the data is; one of :data:`DATA_KINDS` for data the built-in models take, or a kind of your own."""
    source: str = ""
    """Where the data comes from and its licence; for generated data, what is generated and why."""
    generated: bool = False
    """True when the data is synthetic rather than real."""

    def __post_init__(self) -> None:
        _check_common("dataset", self.name, self.data_kind, {"datamodule": self.datamodule})


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """One architecture: a LightningModule, its default LightningDataModule and how to judge it."""

    name: str
    """Registry name used on the command line, e.g. ``"lstm"``."""
    summary: str
    """One line: what the architecture is and does."""
    model: str
    """The LightningModule as ``"module:Class"``."""
    datamodule: str
    """The default LightningDataModule as ``"module:Class"``."""
    data_kind: str
    """What the model expects of its data; one of :data:`DATA_KINDS`, or a kind of your own (then say which
    datamodule attributes the model takes in ``links``)."""
    data_name: str
    """Short label of the default data, for ``dlbench list``."""
    data_source: str = ""
    """Where the default data comes from and its licence; for generated data, what is generated and why."""
    generated_data: bool = False
    """True when the default data is synthetic rather than real."""
    monitor: str = "val/loss"
    """The logged metric that decides the best checkpoint."""
    mode: str = "min"
    """``"min"`` or ``"max"``: which way ``monitor`` improves."""
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    """Trainer arguments this plugin is best run with by default (e.g. ``{"max_epochs": 60}``)."""
    links: tuple[str, ...] | None = None
    """Datamodule attributes passed to model arguments of the same name; ``DATA_KINDS[data_kind]`` by default."""
    tiny_args: tuple[str, ...] = ()
    """Command-line overrides for a tiny model (two layers, eight units), used by the smoke and checkpoint tests."""
    learn_args: tuple[str, ...] = ()
    """Command-line overrides for a short run that must already beat the baseline (CI's learning test)."""
    score: str = ""
    """The test metric the learning check reads, e.g. ``"test/rmse"``; better in the direction of ``mode``."""
    baseline: str = ""
    """A logged metric of a trivial baseline on the same split (majority class, persistence, PCA, ...), which
    ``score`` must beat."""
    baseline_label: str = ""
    """What the baseline is, in a few words (``"majority class"``, ``"persistence: the last value repeated"``), for
    the Results block and ``dlbench compare``; read from ``baseline``'s name when empty (:func:`baseline_label`)."""

    def __post_init__(self) -> None:
        _check_common("plugin", self.name, self.data_kind, {"model": self.model, "datamodule": self.datamodule})
        if self.links is None and self.data_kind not in DATA_KINDS:
            raise ValueError(f"plugin {self.name!r}: data_kind {self.data_kind!r} is not a built-in kind "
                             f"({', '.join(DATA_KINDS)}); name the datamodule attributes the model takes in "
                             f"links=(...)")
        if self.mode not in ("min", "max"):
            raise ValueError(f"plugin {self.name!r}: mode must be 'min' or 'max', got {self.mode!r}")
        for what in ("monitor", "score", "baseline"):
            value = getattr(self, what)
            if value and "/" not in value:
                raise ValueError(f"plugin {self.name!r}: {what} {value!r} must be a '<stage>/<metric>' name")

    @property
    def link_names(self) -> tuple[str, ...]:
        """Datamodule attributes this plugin's model receives (``links``, else those of its data kind)."""
        return self.links if self.links is not None else DATA_KINDS.get(self.data_kind, ())


_BASELINE_WORDS = {"majority": "majority class", "persistence": "persistence", "pca": "PCA", "noise": "noise",
                   "copy": "copying the input", "prior": "prior", "mean": "mean", "best_feature": "best single feature",
                   "prevalence": "prevalence", "uniform": "uniform guess", "random": "random guess"}


def baseline_label(plugin: Plugin | None, tag: str) -> str:
    """What the baseline metric ``tag`` is, in words: the plugin's ``baseline_label`` for its own baseline, else read
    from the tag's name (``test/acc_majority`` -> ``majority class``), else the tag itself."""
    if plugin is not None and plugin.baseline_label and plugin.baseline.rpartition("/")[2] == tag.rpartition("/")[2]:
        return plugin.baseline_label
    name = tag.rpartition("/")[2]
    for suffix, words in sorted(_BASELINE_WORDS.items(), key=lambda item: -len(item[0])):
        if name.endswith("_" + suffix) or name.startswith(suffix + "_"):
            return words
    return tag
