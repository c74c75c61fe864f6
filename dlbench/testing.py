"""Checks any plugin can be put through, dlbench's own and third parties' alike.

dlbench's test suite runs them over every installed plugin; a third-party package can call them from its own tests
(``from dlbench.testing import check_round_trip``) to hold its plugin to the same contract.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dlbench.cli import main
from dlbench.core import registry
from dlbench.core.conventions import using_log_root
from dlbench.runs.run import last_scalars
from dlbench.runs.trained import first_batch, tensors_of
from dlbench.train.lightning_cli import build

__all__ = ["QUIET", "build", "check_learns", "check_predict", "check_round_trip", "check_smoke", "using_log_root"]

QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def _outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return model.predict_step(batch, 0)


def check_smoke(name: str, tmp_path: Path) -> None:
    """A few real training steps with the tiny preset: every parameter that should learn changes and stays finite."""
    spec = registry.plugin(name)
    model, datamodule, trainer = build(name, *spec.tiny_args, "--trainer.fast_dev_run", "2", *QUIET,
                                       log_dir=tmp_path)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    trainer.fit(model, datamodule=datamodule)
    after = dict(model.named_parameters())
    assert all(torch.isfinite(after[k]).all() for k in before), f"{name}: non-finite parameters after training"
    changed = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert changed, f"{name}: no parameter changed in two training steps"


def check_round_trip(name: str, tmp_path: Path) -> None:
    """Train briefly, save a checkpoint, load it with the model class: identical predictions on the same batch."""
    spec = registry.plugin(name)
    model, datamodule, trainer = build(name, *spec.tiny_args, "--trainer.max_steps", "2",
                                       "--trainer.limit_val_batches", "1", "--test_after_fit", "false", *QUIET,
                                       log_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / "round_trip.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, map_location="cpu", weights_only=False)
    batch = first_batch(datamodule)
    expected, got = tensors_of(_outputs(model.cpu(), batch)), tensors_of(_outputs(loaded, batch))
    assert expected, f"{name}: predict_step returned no tensors"
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, msg=f"{name}: predictions differ after a checkpoint round trip")


def check_learns(name: str, tmp_path: Path, *args: str) -> dict[str, float]:
    """Run ``dlbench fit`` with the plugin's learning preset (and ``args`` after it); its test score must beat its
    logged baseline."""
    spec = registry.plugin(name)
    assert spec.score and spec.baseline, f"{name}: the spec names no score and baseline to check learning against"
    with using_log_root(tmp_path):
        code = main(["fit", "--model", name, *spec.learn_args, *QUIET, *args])
    assert code == 0, f"{name}: dlbench fit exited with {code}"
    (run_dir,) = sorted((tmp_path / spec.name).glob("version_*"))
    scalars = last_scalars(run_dir)
    score, baseline = scalars[spec.score], scalars[spec.baseline]
    better = score < baseline if spec.mode == "min" else score > baseline
    assert better, f"{name}: {spec.score}={score:.4g} does not beat {spec.baseline}={baseline:.4g}"
    return scalars


def _same_row(got: dict, want: dict, name: str) -> None:
    for key, value in want.items():
        if key in ("input", "image") or key.endswith("_image"):
            continue
        assert key in got, f"{name}: predict's row lacks {key!r}: {got}"
        if isinstance(value, float):
            assert abs(float(got[key]) - value) <= 1e-4 + 1e-3 * abs(value), \
                f"{name}: {key} is {got[key]} from the files, {value} from the test batch"
        else:
            assert got[key] == value, f"{name}: {key} is {got[key]!r} from the files, {value!r} from the test batch"


def check_predict(name: str, tmp_path: Path, limit: int = 8) -> list[dict]:
    """Train the tiny preset for a few steps, write the first ``limit`` test inputs as the files a user would give
    ``--input`` (the predictor's ``write_inputs``), run ``dlbench predict`` on them, and compare each row with the
    rows of ``predict_step`` on the test batch itself: the files round-trip to the same predictions, through the
    preprocessing saved with the run. Plugins that predict without inputs (samples, a graph) are checked by their
    own tests; this returns ``[]`` for them."""
    from dlbench.data.predict import Sink, cpu_outputs
    from dlbench.runs.trained import TrainedRun
    from dlbench.tools.predict import load_predictor, predict, predicts_from

    spec = registry.plugin(name)
    model, datamodule, trainer = build(name, *spec.tiny_args, "--trainer.max_steps", "3",
                                       "--trainer.limit_val_batches", "1", "--test_after_fit", "false", *QUIET,
                                       log_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    (run,) = sorted((tmp_path / name).glob("version_*"))
    source = TrainedRun.open(run)
    predictor = load_predictor(source)
    loaded = source.load_model()
    if predicts_from(loaded, predictor) == "samples":
        return []
    batch = first_batch(datamodule, "test")
    batch = _head(batch, limit)
    try:
        files = predictor.write_inputs(batch, tmp_path / "inputs")
    except NotImplementedError:
        import pytest

        pytest.skip(f"{name}: its predictor cannot write a test batch back as input files (write_inputs); its own "
                    f"tests check predict on files")
    assert files, f"{name}: write_inputs wrote no files"
    result = predict(run, [str(f) for f in files], output=tmp_path / "rows.jsonl")
    assert not result.errors, f"{name}: predict refused its own test inputs: {result.errors}"
    with torch.no_grad():
        outputs = loaded.predict_step(_head(first_batch(datamodule, "test"), limit), 0)
    outputs = cpu_outputs(outputs)
    from dlbench.data.predict import Source

    examples = [e for f in files for e in predictor.read(Source(name=str(f), path=Path(f)), {})]
    want = predictor.rows(outputs, examples, {}, Sink(None))
    assert len(result.rows) == len(want), f"{name}: {len(result.rows)} rows from {len(files)} files, want {len(want)}"
    for got, expected in zip(result.rows, want, strict=True):
        _same_row(got, expected, name)
    return result.rows


def _head(batch, n: int):
    """The first ``n`` samples of a batch (a tensor, or a tuple/list of tensors sharing the first dimension)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_head(b, n) for b in batch)
    if isinstance(batch, dict):
        return {k: _head(v, n) for k, v in batch.items()}
    return batch
