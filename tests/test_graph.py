"""The computation graph in TensorBoard's Graphs tab: a real run logs its model's graph by default, ``--log_graph
false`` turns it off, every built-in plugin's model traces, and a model that cannot be traced costs one line of
warning, never the run."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlbench.core import registry
from dlbench.testing import QUIET, build
from dlbench.train.logger import RunLogger
from tests.conftest import dlbench

TINY_CNN = ("--model.channels", "[4, 4]", "--model.hidden_size", "8", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--test_after_fit", "false",
            *QUIET)
BUILTINS = [e.name for e in registry.entries(registry.PLUGINS) if not e.broken and e.dist == "dlbench"]


def _graph(run_dir: Path):
    """The run's graph as TensorBoard's own reader loads it, or None."""
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc.Graph() if acc.Tags()["graph"] else None


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("dlbench") and r.levelno >= logging.WARNING]


def test_a_run_logs_its_graph_and_log_graph_false_turns_it_off(tmp_path):
    for sub in ("on", "off"):
        (tmp_path / sub).mkdir()
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side: half the wall time on two cores
        on, off = pool.map(lambda sub, extra: dlbench("fit", "--model", "cnn", *TINY_CNN, *extra, cwd=tmp_path / sub),
                           ("on", "off"), ((), ("--log_graph", "false")))
    assert on.returncode == 0, on.stderr
    assert off.returncode == 0, off.stderr
    graph = _graph(tmp_path / "on" / "lightning_logs" / "cnn" / "version_0")
    assert graph is not None
    ops = {node.op for node in graph.node}
    assert "aten::_convolution" in ops and "aten::linear" in ops  # the traced layers, not an empty placeholder
    inputs = [node for node in graph.node if node.op == "IO Node" and node.name.startswith("input")]
    assert inputs  # the example input (batch 2, the data's own channels and size) is where the graph begins
    assert _graph(tmp_path / "off" / "lightning_logs" / "cnn" / "version_0") is None
    assert "graph" not in on.stderr.lower()  # no warning when tracing works


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # one step, no validation
@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_model_traces_to_a_graph(name, tmp_path, caplog):
    spec = registry.plugin(name)
    model, datamodule, trainer = build(name, *spec.tiny_args, "--trainer.max_steps", "1", "--trainer.limit_val_batches",
                                       "0", *QUIET, log_dir=tmp_path)
    example = model.example_input_array
    assert example is not None, f"{name} sets no example_input_array"
    first = example[0] if isinstance(example, tuple) else example
    assert len(first) == 2  # small: a batch of two (graph plugins: a graph of two nodes)
    with caplog.at_level(logging.WARNING, logger="dlbench"):
        trainer.fit(model, datamodule=datamodule)
    assert not _warnings(caplog), caplog.text
    trainer.logger.experiment.flush()
    assert _graph(Path(trainer.logger.log_dir)) is not None


class Noisy(L.LightningModule):
    """Dropout, a submodule frozen in eval mode, and noise drawn in forward even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.BatchNorm1d(3).eval()
        self.layer = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
        self.example_input_array = torch.zeros(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.frozen(x)) + torch.rand_like(x)


def test_tracing_leaves_modes_statistics_and_random_state_as_they_were(tmp_path, caplog):
    logger = RunLogger(save_dir=str(tmp_path), name="noisy")
    model = Noisy()
    stats = model.frozen.running_mean.clone()
    rng = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="dlbench"):
        logger.log_graph(model)
    assert not _warnings(caplog), caplog.text
    assert model.training and model.layer.training and not model.frozen.training
    assert torch.equal(model.frozen.running_mean, stats)
    assert torch.equal(torch.get_rng_state(), rng)  # a run with a graph draws the same random numbers as one without
    logger.experiment.flush()
    assert _graph(Path(logger.log_dir)) is not None


class Broken(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 3)
        self.example_input_array = torch.zeros(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward needs a graph\nsecond line of detail")


def test_a_model_that_cannot_be_traced_is_skipped_with_one_line(tmp_path, caplog, capsys):
    logger = RunLogger(save_dir=str(tmp_path), name="broken")
    model = Broken()
    with caplog.at_level(logging.WARNING, logger="dlbench"):
        logger.log_graph(model)
        logger.log_graph(model)  # Lightning calls it again for test after fit: one attempt a run
    assert [r.getMessage().count("\n") for r in _warnings(caplog)] == [0]
    message = _warnings(caplog)[0].getMessage()
    assert "computation graph of Broken not logged" in message and "forward needs a graph" in message
    assert "--log_graph false" in message
    assert capsys.readouterr().out == ""  # torch's tracer prints the error; none of it reaches the console
    logger.experiment.flush()
    assert _graph(Path(logger.log_dir)) is None
