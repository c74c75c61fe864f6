"""A trained run as the tools use it: its checkpoint (loaded safely and checked against the model), its model and
data module rebuilt from the run's ``config.yaml`` (or from the class paths Lightning saved in a checkpoint on its
own), and a real batch of its test split with the tensors ``forward`` takes from it.

Export, compress and the plugin checks of :mod:`dlbench.testing` all start here. Imports torch only when a function
runs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlbench.core import registry
from dlbench.core.errors import DlbenchError, first_line
from dlbench.core.spec import import_class
from dlbench.runs.directory import RunDir


class NotExportable(DlbenchError):
    """The model cannot be driven from its data's tensors (no example input, graph batches, ...); the message says
    why."""


def load_checkpoint(path: str, weights_only: bool | None) -> dict:
    """The checkpoint at ``path``, loaded without running code unless the user opted in; a DlbenchError that
    says what is wrong with a missing, corrupt, unsafe or foreign file."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only is not False)
    except FileNotFoundError:
        raise DlbenchError(f"checkpoint {path} does not exist. Check the path (runs keep theirs in "
                           f"lightning_logs/<plugin>/version_N/checkpoints/).") from None
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise DlbenchError(f"checkpoint {path} is corrupt or not a checkpoint at all ({str(err)[:120]}). Use "
                               f"another checkpoint, e.g. the run's last.ckpt or best-*.ckpt.") from None
        blocked = next((ln for ln in str(err).splitlines() if "GLOBAL" in ln), "").strip()
        raise DlbenchError(f"checkpoint {path} holds Python objects beyond tensors and plain data, so loading it "
                           f"could run code; dlbench refused to load it ({blocked[:160]}). If you trust where it "
                           f"came from, add --weights_only false.") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        raise DlbenchError(f"checkpoint {path} is corrupt or truncated ({str(err).splitlines()[0][:200]}). Use "
                           f"another checkpoint, e.g. the run's last.ckpt or best-*.ckpt.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise DlbenchError(f"{path} is not a Lightning checkpoint (it has no state_dict). Use a .ckpt file written "
                           f"by dlbench fit.")
    return checkpoint


def check_fits(path: str, checkpoint: dict, model) -> None:
    """Fail early when a checkpoint's weights are not those of ``model`` (another plugin, other sizes)."""
    expected, saved = set(model.state_dict()), set(checkpoint["state_dict"])
    missing, unexpected = expected - saved, saved - expected
    if missing or unexpected:
        saved_by = checkpoint.get("hyper_parameters", {}).get("_class_path", "another model")
        raise DlbenchError(f"checkpoint {path} does not fit {type(model).__name__}: it was saved by {saved_by} "
                           f"({len(missing)} weights missing, {len(unexpected)} unexpected, e.g. "
                           f"{sorted(missing or unexpected)[0]!r}). Use a checkpoint of the same plugin and sizes.")


def first_batch(datamodule, stage: str = "test"):
    """The first batch of ``stage``'s loader of ``datamodule``, as the model receives it (after the data module's
    ``on_after_batch_transfer``)."""
    datamodule.setup(stage)
    loader = getattr(datamodule, f"{stage}_dataloader")()
    batch = next(iter(loader))
    if hasattr(datamodule, "on_after_batch_transfer"):
        batch = datamodule.on_after_batch_transfer(batch, 0)
    return batch


def tensors_of(out) -> list:
    """Every tensor in a model output, depth first: a tensor, or dicts, lists and tuples of them."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensors_of(o)]
    return []


def _config_section(config: dict, key: str) -> tuple[str | None, dict[str, Any]]:
    section = config.get(key)
    if isinstance(section, str):
        return section, {}
    if isinstance(section, dict) and isinstance(section.get("class_path"), str):
        return section["class_path"], dict(section.get("init_args") or {})
    return None, {}


@dataclass
class TrainedRun:
    """A checkpoint and what it takes to rebuild its model and data module: from a run directory (its best
    checkpoint, else ``last.ckpt``, and its ``config.yaml``) or from a checkpoint file on its own."""

    checkpoint: Path
    run_dir: Path | None
    model_class: str
    data_class: str | None
    data_args: dict[str, Any] = field(default_factory=dict)
    saved: dict = field(default_factory=dict, repr=False)
    """The loaded checkpoint."""

    @classmethod
    def open(cls, path: str | Path, weights_only: bool = True) -> TrainedRun:
        """The run or checkpoint at ``path``, its checkpoint loaded and checked; DlbenchError when it is not one."""
        ckpt_path, run_dir = cls._locate(Path(path))
        try:
            saved = load_checkpoint(str(ckpt_path), weights_only)
        except DlbenchError:
            raise
        except Exception as err:  # torch's unpickler fails on some garbage with errors load_checkpoint does not expect
            raise DlbenchError(f"checkpoint {ckpt_path} is corrupt or not a checkpoint at all ({first_line(err)}). "
                               f"Use another checkpoint, e.g. the run's last.ckpt or best-*.ckpt.") from None
        config = run_dir.config() if run_dir is not None else {}
        model_class, _ = _config_section(config, "model")
        data_class, data_args = _config_section(config, "data")
        model_class = model_class or saved.get("hyper_parameters", {}).get("_class_path")
        if not model_class:
            raise DlbenchError(f"{ckpt_path} does not say which model class wrote it (no config.yaml beside it and "
                               f"no _class_path in its hyperparameters). Use a checkpoint written by dlbench fit.")
        if data_class is None:
            saved_data = saved.get("datamodule_hyper_parameters", {})
            data_class = saved_data.get("_class_path")
            data_args = {k: v for k, v in saved_data.items() if not k.startswith("_")}
        return cls(ckpt_path, run_dir.path if run_dir else None, model_class, data_class, data_args, saved)

    @staticmethod
    def _locate(path: Path) -> tuple[Path, RunDir | None]:
        """(checkpoint, run or None) for a run directory or a checkpoint file."""
        if path.is_file():
            run = RunDir.of(path)
            return path, run if run.config_file.is_file() else None
        if not path.is_dir():
            raise DlbenchError(f"{path} does not exist. Give a run directory (lightning_logs/<plugin>/version_N) or "
                               f"a .ckpt file.")
        run = RunDir(path)
        found = run.best_checkpoint() or run.last_checkpoint
        if found is None:
            raise DlbenchError(f"{path} holds no checkpoints/best-*.ckpt or checkpoints/last.ckpt. Give a run "
                               f"directory of a run that finished at least one epoch, or the .ckpt file itself.")
        return found, run

    @property
    def plugin_name(self) -> str:
        entry = registry.entry_for_model_class(self.model_class)
        return entry.name if entry else self.model_class.rpartition(".")[2].lower()

    def load_model(self, weights_only: bool = True):
        """The model class of the run with the checkpoint's weights, in eval mode on the CPU."""
        cls = import_class(self.model_class, "model")
        try:
            model = cls.load_from_checkpoint(self.checkpoint, map_location="cpu", weights_only=weights_only)
        except (RuntimeError, KeyError, TypeError, ValueError) as err:
            raise DlbenchError(f"cannot load {self.checkpoint} into {cls.__name__}: "
                               f"{str(err).splitlines()[0][:300]}. Use a checkpoint written by this plugin's dlbench "
                               f"fit.") from None
        return model.eval()

    def load_datamodule(self):
        """The run's data module, rebuilt from its class path and arguments, with a test split."""
        if self.data_class is None:
            raise DlbenchError(f"{self.checkpoint} does not say which data module the model was trained on, so "
                               f"there is no real input to take. Give the run directory, which has config.yaml.")
        cls = import_class(self.data_class, "data module")
        try:
            datamodule = cls(**self.data_args)
        except (TypeError, ValueError) as err:
            raise DlbenchError(f"cannot rebuild the data module {cls.__name__} of this run: {err}.") from None
        if not hasattr(datamodule, "test_dataloader"):
            raise NotExportable(f"the data module {cls.__name__} has no test split to take a real input from.")
        return datamodule

    def real_batch(self, datamodule=None):
        """The first batch of the test split of the run's data module (or of ``datamodule``)."""
        return first_batch(datamodule if datamodule is not None else self.load_datamodule(), "test")


def describe_tensors(tensors) -> str:
    return ", ".join(f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}" if hasattr(t, "shape")
                     else type(t).__name__ for t in tensors)


def forward_inputs(model, batch) -> tuple:
    """The positional inputs of ``model.forward`` taken from a data batch, matched against the model's
    ``example_input_array`` (the same number of tensors, dimensions and kind of numbers)."""
    import torch

    example = model.example_input_array
    if example is None:
        raise NotExportable("its model sets no example_input_array, so which inputs forward takes is unknown. Set "
                            "self.example_input_array in the model's __init__.")
    if isinstance(example, dict):
        raise NotExportable("its forward takes keyword inputs (example_input_array is a dict); the exporters here "
                            "trace positional tensor inputs.")
    examples = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if isinstance(batch, torch.Tensor):
        candidates: tuple = (batch,)
    elif isinstance(batch, (tuple, list)):
        candidates = tuple(batch[: len(examples)])
    else:
        raise NotExportable(f"its batches are {type(batch).__name__} objects, not tensors (graph data and the like); "
                            f"the exporters trace tensor inputs only.")
    fits = len(candidates) == len(examples) and all(
        isinstance(c, torch.Tensor) and isinstance(e, torch.Tensor) and c.dim() == e.dim()
        and c.is_floating_point() == e.is_floating_point() for c, e in zip(candidates, examples, strict=True))
    if not fits:
        raise NotExportable(f"its forward takes ({describe_tensors(examples)}), but a test batch begins with "
                            f"({describe_tensors(candidates)}): what the model computes from is not what the data "
                            f"holds (e.g. a generator's noise). Export such a model from Python with its own inputs.")
    return candidates


def flat_outputs(out) -> list:
    """The tensors of a model output, detached, on the CPU."""
    return [t.detach().cpu() for t in tensors_of(out)]


