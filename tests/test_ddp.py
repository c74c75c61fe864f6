"""Distributed data parallel on CPU (two processes, gloo) through the real ``dlbench fit`` command: one run directory
and one set of checkpoints written by rank zero, and metrics synchronised across the processes.

One plugin per data kind (whichever are installed and working), tiny presets, two short epochs. A callback given on
the command line writes each rank's epoch-level ``val/*`` and ``test/*`` metrics to JSON; they must be identical on
both ranks (torchmetrics objects synchronise in ``compute``; a plain tensor logged without ``sync_dist=True`` would
differ). The test metrics must also match a single-process test of the same best checkpoint: the two ranks' shards
together cover the whole test split.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
from conftest import dlbench

from dlbench.core import registry
from dlbench.core.spec import DATA_KINDS

PREFERRED = {"series": "lstm", "images": "mlp", "graph": "gcn", "tabular": "tabular", "text": "transformer",
             "translation": "seq2seq", "audio": "audio", "detection": "detector"}
"""The cheapest plugin of each kind; another plugin of the kind stands in when it is missing or broken."""
SHORT = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false")
DDP = ("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu")
TOLERANCE = {"rel": 0.01, "abs": 5e-3}
"""DDP against one process: shards padded to equal length may count a sample or two twice."""

RANK_METRICS = '''
import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RankMetrics(Callback):
    """Writes each process's epoch-level metrics of ``stage`` to ``<out_dir>/<stage>_rank<R>_epoch<E>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _dump(self, trainer, stage: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith(stage + "/") and v.numel() == 1}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = f"{stage}_rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        (self.out_dir / name).write_text(json.dumps(metrics))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._dump(trainer, "val")

    def on_test_end(self, trainer, pl_module) -> None:
        self._dump(trainer, "test")
'''


def _one_plugin_per_kind() -> list[str]:
    working = {e.name: e.spec for e in registry.entries(registry.PLUGINS) if not e.broken}
    chosen = []
    for kind in DATA_KINDS:
        preferred = PREFERRED.get(kind)
        if preferred in working and working[preferred].data_kind == kind:
            chosen.append(preferred)
        else:
            chosen += [n for n, s in sorted(working.items()) if s.data_kind == kind][:1]
    return chosen


def _callback_args(module_dir: Path, out_dir: Path) -> tuple[str, str]:
    (module_dir / "dlbench_rank_metrics.py").write_text(textwrap.dedent(RANK_METRICS))
    spec = [{"class_path": "dlbench_rank_metrics.RankMetrics", "init_args": {"out_dir": str(out_dir)}}]
    return "--trainer.callbacks", json.dumps(spec)


def _metrics(out_dir: Path) -> dict[tuple[str, int, int], dict[str, float]]:
    found = {}
    for path in out_dir.glob("*.json"):
        stage, rank, epoch = re.fullmatch(r"(\w+)_rank(\d+)_epoch(\d+)\.json", path.name).groups()
        found[stage, int(rank), int(epoch)] = json.loads(path.read_text())
    return found


@pytest.mark.parametrize("name", _one_plugin_per_kind())
def test_ddp_on_two_cpu_processes_writes_one_run_with_synchronised_metrics(name, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    spec = registry.plugin(name)
    args = ("fit", "--model", name, *spec.tiny_args, *SHORT)
    result = dlbench(*args, *DDP, *_callback_args(hook, tmp_path / "ddp"), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = sorted((tmp_path / "lightning_logs" / name).iterdir())
    assert [r.name for r in runs] == ["version_0"]  # rank 1 made no run directory of its own
    run = runs[0]
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    checkpoints = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.ckpt"))
    best = [p for p in checkpoints if p.name.startswith("best-")]
    assert len(best) == 1 and set(checkpoints) == {best[0], run.relative_to(tmp_path) / "checkpoints" / "last.ckpt"}
    writers = {f.name.split(".")[-2] for f in run.glob("events.out.tfevents.*")}
    assert len(writers) == 1, f"event files from several processes: {writers}"  # only rank 0 logs

    metrics = _metrics(tmp_path / "ddp")
    for stage in ("val", "test"):
        epochs = sorted(epoch for (s, rank, epoch) in metrics if s == stage and rank == 0)
        assert epochs, f"no {stage} metrics were logged"
        for epoch in epochs:
            rank0, rank1 = metrics[stage, 0, epoch], metrics.get((stage, 1, epoch))
            assert rank0 and rank0 == rank1, f"{stage} metrics differ between the ranks at epoch {epoch}"

    # The same best checkpoint tested by one process sees the whole test split, as the two ranks did together.
    single = tmp_path / "single"
    single.mkdir()
    tested = dlbench("test", "--config", str(run / "config.yaml"), "--ckpt_path", str(tmp_path / best[0]),
                     "--trainer.devices", "1", "--trainer.strategy", "auto", *_callback_args(hook, single / "out"),
                     cwd=single, timeout=300)
    assert tested.returncode == 0, tested.stderr[-3000:]
    (alone,) = [m for (stage, _, _), m in _metrics(single / "out").items() if stage == "test"]
    (ddp_test,) = [m for (stage, rank, _), m in metrics.items() if stage == "test" and rank == 0]
    assert set(alone) == set(ddp_test)
    for key, value in ddp_test.items():
        assert value == pytest.approx(alone[key], **TOLERANCE), key
