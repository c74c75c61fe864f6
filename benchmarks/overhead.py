"""Framework overhead: seconds per epoch of ``dlbench fit`` against a plain PyTorch loop, vanilla and bare Lightning.

For each plugin (default ``mlp``, ``cnn``, ``lstm``) the same model class, the same in-memory tensors from the
plugin's datamodule, the same batch size and the same optimiser and learning-rate schedule are trained four ways:

* **plain**: ``for x, y in batches: opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()``
  over the datamodule's tensors, batched by indexing with one random permutation an epoch (the cost TensorLoader
  pays), then one pass over the validation split under ``no_grad``;
* **dlbench**: the real ``dlbench fit`` path (``dlbench.testing.build`` + ``trainer.fit``, which is what
  ``dlbench fit`` runs) with its logger, checkpoints, callbacks and progress bar on, as a user runs it;
* **vanilla Lightning**: a plain LightningModule that calls ``self.log`` every step, Lightning's default Trainer
  (TQDM bar refreshing every step, TensorBoardLogger, a checkpoint every epoch) and a ``DataLoader`` over a
  ``TensorDataset``;
* **bare Lightning**, the floor that Lightning's loop itself sets: the same module logging nothing in training,
  a Trainer with no logger, checkpoint, progress bar or model summary, and the datamodule's own in-memory batches
  (the tensor path dlbench uses): a practical floor for any run through ``Trainer.fit`` (it still logs its
  validation loss and dispatches the timing callback's hooks).

An epoch includes its validation pass in all four (and, for the three Lightning ones, whatever they do at epoch end:
checkpoints, logging). Timing alternates within one process: before every Lightning epoch one plain epoch runs
(from the Lightning run's ``on_train_epoch_start``), so the machine's load falls on both alike; the Lightning epoch
is the time from one ``on_train_epoch_start`` to the next, minus the plain epoch run there. The first ``--warmup``
epochs of each are dropped and the medians of the rest are compared.

``--breakdown`` times what the dlbench epoch spends where (each callback's hooks, ``self.log``, the logger,
checkpoint writes, torchmetrics, the validation loop, the model's own steps), to find the overhead.

    python benchmarks/overhead.py
    python benchmarks/overhead.py --plugins mlp --data mnist --root $DLBENCH_TEST_DATA/mnist --batch-size 128
    python benchmarks/overhead.py --plugins cnn --breakdown
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from dlbench.core import registry
from dlbench.data.batches import TensorLoader
from dlbench.testing import build

GOAL = 1.10
"""dlbench over the plain loop (with --steps-per-call: the K run's)."""
OWN_GOAL = 1.05
"""dlbench over bare Lightning: what dlbench's own additions may cost."""


# --- what the plain loop needs to know of each plugin: its loss and its optimiser (from configure_optimizers) ---

def _adamw_cosine(model: torch.nn.Module, total_steps: int):
    hp = model.hparams
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps), "step"


def _adam_plateau(model: torch.nn.Module, total_steps: int):
    hp = model.hparams
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5), "plateau"


@dataclass(frozen=True)
class Recipe:
    loss: Callable[..., torch.Tensor]
    optimizer: Callable
    classify: bool


RECIPES = {
    "mlp": Recipe(F.cross_entropy, _adamw_cosine, classify=True),
    "cnn": Recipe(F.cross_entropy, _adamw_cosine, classify=True),
    "lstm": Recipe(F.mse_loss, _adam_plateau, classify=False),
}


@dataclass
class Data:
    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    batch_size: int
    val_batch_size: int
    prepare: Callable
    """The datamodule's per-batch step (normalising uint8 images), applied alike on every path."""
    limit: int | None = None
    """Training batches an epoch at most (``--limit-batches``), on every path."""

    @property
    def steps(self) -> int:
        full = -(-len(self.train[0]) // self.batch_size)
        return min(full, self.limit) if self.limit else full


def plugin_data(datamodule, limit: int | None = None, device: str = "cpu") -> Data:
    """The datamodule's tensors, on ``device`` (where dlbench's tensor path holds them too)."""
    datamodule.setup("fit")
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()  # TensorLoaders (no trainer yet)
    prepare = functools.partial(datamodule.on_after_batch_transfer, dataloader_idx=0)
    return Data(tuple(t.to(device) for t in train.tensors), tuple(t.to(device) for t in val.tensors),
                train.batch_size, val.batch_size, prepare, limit)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The baseline: the plugin's model trained by hand."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, data: Data, epochs: int) -> None:
        self.device = data.train[0].device
        self.model, self.recipe, self.data = model.to(self.device), recipe, data
        self.opt, self.sched, self.interval = recipe.optimizer(model, data.steps * epochs)
        self.seconds: list[float] = []

    def epoch(self) -> float:
        start = time.perf_counter()
        model, data, loss_fn = self.model, self.data, self.recipe.loss
        x_all, y_all = data.train
        model.train()
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(len(self.seconds)))
        order = order.to(self.device)
        for i in range(0, min(len(order), data.steps * data.batch_size), data.batch_size):
            idx = order[i : i + data.batch_size]
            x, y = data.prepare((x_all[idx], y_all[idx]))
            self.opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            self.opt.step()
            if self.interval == "step":
                self.sched.step()
        model.eval()
        loss_sum, hits = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        with torch.no_grad():
            vx, vy = data.val
            for i in range(0, len(vx), data.val_batch_size):
                x, y = data.prepare((vx[i : i + data.val_batch_size], vy[i : i + data.val_batch_size]))
                out = model(x)
                loss_sum += loss_fn(out, y, reduction="sum")
                if self.recipe.classify:
                    hits += (out.argmax(-1) == y).sum()
        val_loss = float(loss_sum) / len(data.val[0])  # waits for the device
        if self.interval == "plateau":
            self.sched.step(val_loss)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        return seconds


class Alternate(Callback):
    """Runs one plain epoch before each Lightning epoch and times the Lightning epochs without it."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.plain.device)  # the Lightning epoch's queued kernels belong to its time
        now = time.perf_counter()
        if self._start is not None:
            self.seconds.append(now - self._start)
        self.plain.epoch()
        self._start = time.perf_counter()


# --- vanilla Lightning: what the tutorials show ---

class VanillaModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, recipe: Recipe, data: Data, total_steps: int,
                 log_train: bool = True) -> None:
        super().__init__()
        self.net, self.recipe, self.prepare, self.total_steps = net, recipe, data.prepare, total_steps
        self.log_train = log_train

    def training_step(self, batch, batch_idx):
        x, y = self.prepare(batch)
        loss = self.recipe.loss(self.net(x), y)
        if self.log_train:
            self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = self.prepare(batch)
        out = self.net(x)
        self.log("val_loss", self.recipe.loss(out, y), prog_bar=True)
        if self.recipe.classify:
            self.log("val_acc", (out.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt, sched, interval = self.recipe.optimizer(self.net, self.total_steps)
        if interval == "plateau":
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --- the runs ---

@dataclass
class Row:
    plugin: str
    data: str
    batch_size: int
    steps: int
    plain: float
    dlbench: float
    vanilla_plain: float = float("nan")
    vanilla: float = float("nan")
    bare_plain: float = float("nan")
    bare: float = float("nan")
    k: int = 1
    k_plain: float = float("nan")
    k_dlbench: float = float("nan")
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.dlbench / self.plain

    @property
    def vanilla_ratio(self) -> float:
        return self.vanilla / self.vanilla_plain

    @property
    def bare_ratio(self) -> float:
        return self.bare / self.bare_plain

    @property
    def own_ratio(self) -> float:
        """dlbench's ratio over bare Lightning's: what dlbench adds to Lightning's own loop."""
        return self.ratio / self.bare_ratio

    @property
    def k_ratio(self) -> float:
        return self.k_dlbench / self.k_plain


def _args(name: str, opts: argparse.Namespace, epochs: int, steps_per_call: int = 1) -> list[str]:
    args = ["--trainer.max_epochs", str(epochs), "--trainer.accelerator", opts.accelerator, "--trainer.devices", "1",
            "--trainer.steps_per_call", str(steps_per_call)]
    spec = registry.plugin(name)
    if opts.data and spec.data_kind == "images":
        args += ["--data", opts.data] + (["--data.root", opts.root] if opts.root else [])
    if opts.batch_size:
        args += ["--data.batch_size", str(opts.batch_size)]
    if opts.limit_batches:  # in batches on every path: Lightning counts calls of K batches
        args += ["--trainer.limit_train_batches", str(-(-opts.limit_batches // steps_per_call))]
    return args


def _fresh(name: str, opts: argparse.Namespace, epochs: int, log_dir: Path, steps_per_call: int = 1):
    return build(name, *_args(name, opts, epochs, steps_per_call), log_dir=log_dir)


def _median_after(values: list[float], warmup: int) -> float:
    kept = values[warmup:]
    return statistics.median(kept) if kept else float("nan")


def measure_dlbench(name: str, opts: argparse.Namespace, log_dir: Path,
                    steps_per_call: int = 1) -> tuple[float, float, Data]:
    epochs = opts.warmup + opts.epochs + 1  # the last epoch has no next start to end its timing
    model, datamodule, trainer = _fresh(name, opts, epochs, log_dir, steps_per_call)
    data = plugin_data(datamodule, opts.limit_batches, opts.device)
    plain_model, _, _ = _fresh(name, opts, epochs, log_dir)  # same class and arguments, its own weights
    alternate = Alternate(PlainLoop(plain_model, RECIPES[name], data, epochs))
    trainer.callbacks.insert(0, alternate)
    trainer.fit(model, datamodule=datamodule)
    return _median_after(alternate.plain.seconds, opts.warmup), _median_after(alternate.seconds, opts.warmup), data


def measure_vanilla(name: str, opts: argparse.Namespace, log_dir: Path) -> tuple[float, float]:
    epochs = opts.warmup + opts.epochs + 1
    net, datamodule, _ = _fresh(name, opts, epochs, log_dir)
    plain_model, _, _ = _fresh(name, opts, epochs, log_dir)
    data = plugin_data(datamodule, opts.limit_batches, opts.device)
    module = VanillaModule(net, RECIPES[name], data, data.steps * epochs)
    alternate = Alternate(PlainLoop(plain_model, RECIPES[name], data, epochs))
    trainer = L.Trainer(max_epochs=epochs, accelerator=opts.accelerator, devices=1, callbacks=[alternate],
                        limit_train_batches=opts.limit_batches or 1.0,
                        logger=TensorBoardLogger(log_dir / "vanilla", name=name), default_root_dir=log_dir / "vanilla")
    train = DataLoader(TensorDataset(*(t.cpu() for t in data.train)), batch_size=data.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(*(t.cpu() for t in data.val)), batch_size=data.val_batch_size)
    trainer.fit(module, train, val)
    return _median_after(alternate.plain.seconds, opts.warmup), _median_after(alternate.seconds, opts.warmup)


def measure_bare(name: str, opts: argparse.Namespace, log_dir: Path) -> tuple[float, float]:
    epochs = opts.warmup + opts.epochs + 1
    net, datamodule, _ = _fresh(name, opts, epochs, log_dir)
    plain_model, _, _ = _fresh(name, opts, epochs, log_dir)
    data = plugin_data(datamodule, opts.limit_batches, opts.device)
    module = VanillaModule(net, RECIPES[name], data, data.steps * epochs, log_train=False)
    alternate = Alternate(PlainLoop(plain_model, RECIPES[name], data, epochs))
    trainer = L.Trainer(max_epochs=epochs, accelerator=opts.accelerator, devices=1, callbacks=[alternate], logger=False,
                        limit_train_batches=opts.limit_batches or 1.0,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=log_dir / "bare")
    train = TensorLoader(*data.train, batch_size=data.batch_size, shuffle=True)  # on the device, as dlbench's
    trainer.fit(module, train, TensorLoader(*data.val, batch_size=data.val_batch_size))
    return _median_after(alternate.plain.seconds, opts.warmup), _median_after(alternate.seconds, opts.warmup)


# --- where dlbench's epoch goes ---

class Timers:
    """Wraps methods of live objects so that the seconds spent in them add up under a label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._active: set[str] = set()

    def wrap(self, obj, method: str, label: str) -> None:
        original = getattr(obj, method)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if label in self._active:  # a recursive or nested call of the same label: count once
                return original(*args, **kwargs)
            self._active.add(label)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self._active.discard(label)

        setattr(obj, method, timed)


class EpochClock(Callback):
    """Total time of the measured epochs (from the start of epoch ``warmup`` to the start of the last one)."""

    def __init__(self, warmup: int, timers: Timers) -> None:
        self.warmup, self.timers = warmup, timers
        self.start: float | None = None
        self.end: float | None = None
        self.epochs = 0
        self.frozen: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.warmup:
            self.timers.seconds.clear()
            self.start = time.perf_counter()
        elif trainer.current_epoch > self.warmup:
            self.end = time.perf_counter()
            self.epochs = trainer.current_epoch - self.warmup
            if trainer.current_epoch == trainer.max_epochs - 1:  # the last epoch: stop counting
                self.frozen = dict(self.timers.seconds)


PARTS = [  # (key, indent, description): the printed order; an indented part is inside the one above it
    ("epoch", 0, "whole epoch (from one on_train_epoch_start to the next)"),
    ("optimizer_step", 1, "optimizer_step: closure (training_step + backward) + optimiser update"),
    ("training_step", 2, "training_step: forward, loss, metric updates, self.log"),
    ("log", 3, "self.log calls (train and val)"),
    ("metric_update", 3, "torchmetrics forward/update (train and val)"),
    ("backward", 2, "backward"),
    ("val_loop", 1, "validation loop, whole"),
    ("validation_step", 2, "validation_step"),
    ("on_validation_epoch_end", 2, "the plugin's on_validation_epoch_end (pictures)"),
    ("metric_compute", 1, "torchmetrics compute (epoch-end values for logging)"),
    ("log_metrics", 1, "logger.log_metrics (TensorBoard scalars)"),
]


def breakdown(name: str, opts: argparse.Namespace, log_dir: Path) -> list[tuple[int, str, float]]:
    """Milliseconds per dlbench epoch spent in each part (see :data:`PARTS`) and in each callback's hooks."""
    epochs = opts.warmup + opts.epochs + 1
    model, datamodule, trainer = _fresh(name, opts, epochs, log_dir, opts.steps_per_call)
    timers = Timers()
    callbacks = []
    for cb in trainer.callbacks:
        key = f"callback {type(cb).__name__}"
        callbacks.append(key)
        for hook in [h for h in dir(cb) if h.startswith("on_") and callable(getattr(cb, h))]:
            if getattr(type(cb), hook) is not getattr(Callback, hook, None):
                timers.wrap(cb, hook, key)
    for method, key in (("optimizer_step", "optimizer_step"), ("training_step", "training_step"), ("log", "log"),
                        ("backward", "backward"), ("validation_step", "validation_step"),
                        ("on_validation_epoch_end", "on_validation_epoch_end")):
        timers.wrap(model, method, key)
    for metric in [m for m in model.modules() if hasattr(m, "compute") and hasattr(m, "update")]:
        timers.wrap(metric, "forward", "metric_update")
        timers.wrap(metric, "update", "metric_update")
        timers.wrap(metric, "compute", "metric_compute")
    timers.wrap(trainer, "save_checkpoint", "save_checkpoint")
    if trainer.logger is not None:
        timers.wrap(trainer.logger, "log_metrics", "log_metrics")
    timers.wrap(trainer.fit_loop.epoch_loop.val_loop, "run", "val_loop")
    clock = EpochClock(opts.warmup, timers)
    trainer.callbacks.insert(0, clock)
    trainer.fit(model, datamodule=datamodule)
    seconds = {**clock.frozen, "epoch": clock.end - clock.start}
    ms = {k: 1000 * v / clock.epochs for k, v in seconds.items()}
    rows = [(indent, text, ms.get(key, 0.0)) for key, indent, text in PARTS]
    for key in callbacks:
        rows.append((1, f"{key} hooks", ms.get(key, 0.0)))
        if key == "callback Checkpoint":
            rows.append((2, "of which checkpoint files (trainer.save_checkpoint)", ms.get("save_checkpoint", 0.0)))
    return rows


# --- report ---

def table(rows: list[Row]) -> str:
    head = ["plugin", "data", "batch", "steps/ep", "plain s/ep", "dlbench s/ep", "ratio", "vanilla ratio",
            "dlbench/vanilla", "bare ratio", "dlbench/bare", "goal", "K", "K ratio", "goal"]
    lines = []
    for r in rows:
        own = r.own_ratio if r.bare == r.bare else float("nan")
        lines.append([r.plugin, r.data, str(r.batch_size), str(r.steps), f"{r.plain:.4f}", f"{r.dlbench:.4f}",
                      f"{r.ratio:.2f}x", f"{r.vanilla_ratio:.2f}x" if r.vanilla == r.vanilla else "-",
                      f"{r.ratio / r.vanilla_ratio:.2f}x" if r.vanilla == r.vanilla else "-",
                      f"{r.bare_ratio:.2f}x" if r.bare == r.bare else "-",
                      f"{own:.2f}x" if own == own else "-",
                      f"<= {OWN_GOAL:.2f}x {'ok' if own <= OWN_GOAL else 'MISSED'}" if own == own else "-",
                      str(r.k) if r.k > 1 else "-", f"{r.k_ratio:.2f}x" if r.k > 1 else f"{r.ratio:.2f}x",
                      f"<= {GOAL:.2f}x {'ok' if (r.k_ratio if r.k > 1 else r.ratio) <= GOAL else 'MISSED'}"])
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", nargs="+", default=["mlp", "cnn", "lstm"], choices=sorted(RECIPES))
    parser.add_argument("--data", default=None, help="dataset for the image plugins (default: theirs, digits)")
    parser.add_argument("--root", default=None, help="--data.root for --data (e.g. $DLBENCH_TEST_DATA/mnist)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the datamodule's")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda", "gpu"],
                        help="where all four train (the plain loop too; vanilla Lightning reads from host memory "
                             "through a DataLoader, the others hold the data on the device); the 1.10x goal is the "
                             "CPU's")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="training batches an epoch at most, on every path (a big data set in less time; the "
                             "full validation split still runs every epoch)")
    parser.add_argument("--epochs", type=int, default=7, help="measured epochs of each kind")
    parser.add_argument("--warmup", type=int, default=2, help="epochs dropped before measuring")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 on a machine shared with other jobs, where "
                             "several threads waiting on each other slow every op down by orders of magnitude")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the vanilla Lightning baseline")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Lightning floor")
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of a dlbench epoch")
    parser.add_argument("--steps-per-call", type=int, default=1, metavar="K",
                        help="also measure dlbench with --trainer.steps_per_call K (K optimiser steps a training_step "
                             "call), against the plain loop")
    opts = parser.parse_args(argv)
    opts.device = "cuda" if opts.accelerator in ("cuda", "gpu") else "cpu"
    if opts.limit_batches is not None and opts.limit_batches < 1:
        parser.error(f"--limit-batches must be a positive number of batches, got {opts.limit_batches}")
    if opts.data and not opts.root and os.environ.get("DLBENCH_TEST_DATA"):
        opts.root = str(Path(os.environ["DLBENCH_TEST_DATA"]) / opts.data.replace("fashion_mnist", "fashion-mnist"))
    os.environ.pop("DLBENCH_DATA_PATH", None)  # the automatic choice: batches on the device
    # The progress display of a run on a terminal (a TQDM bar), not the cheaper line an epoch that a run whose output
    # goes to a file gets: the benchmark's own output usually goes to a file.
    os.environ.setdefault("DLBENCH_PROGRESS", "bar")
    if opts.threads:
        torch.set_num_threads(opts.threads)

    rows, breakdowns = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.plugins:
            log_dir = Path(tmp) / name
            plain, dl, data = measure_dlbench(name, opts, log_dir)
            data_name = opts.data if opts.data and registry.plugin(name).data_kind == "images" \
                else registry.plugin(name).data_name
            row = Row(name, data_name, data.batch_size, data.steps, plain, dl)
            if not opts.no_vanilla:
                row.vanilla_plain, row.vanilla = measure_vanilla(name, opts, log_dir)
            if not opts.no_bare:
                row.bare_plain, row.bare = measure_bare(name, opts, log_dir)
            if opts.steps_per_call > 1:
                row.k = opts.steps_per_call
                row.k_plain, row.k_dlbench, _ = measure_dlbench(name, opts, log_dir, opts.steps_per_call)
            rows.append(row)
            if opts.breakdown:
                breakdowns[name] = breakdown(name, opts, log_dir)
            print(f"\n{name}: plain {plain:.4f} s/epoch, dlbench {dl:.4f} s/epoch ({dl / plain:.2f}x)",
                  file=sys.stderr, flush=True)

    print(f"\nFramework overhead: seconds per epoch (training + validation), median of {opts.epochs} epochs after "
          f"{opts.warmup} warm-up, alternating with a plain PyTorch loop in one process")
    print(table(rows))
    print("ratio: dlbench s/epoch over plain s/epoch; vanilla ratio: vanilla Lightning over the plain epochs "
          "alternated with it; dlbench/vanilla: the two ratios divided (below 1: dlbench is faster than vanilla); "
          "bare ratio: Trainer.fit with nothing on (no logger, checkpoint, bar), the floor for any Lightning run; "
          f"dlbench/bare: what dlbench adds to that floor (goal <= {OWN_GOAL:.2f}x); K ratio: dlbench with "
          f"--trainer.steps_per_call K over the plain loop (goal <= {GOAL:.2f}x; without K, the plain ratio)")
    for name, parts in breakdowns.items():
        k = f", --trainer.steps_per_call {opts.steps_per_call}" if opts.steps_per_call > 1 else ""
        print(f"\nWhere a dlbench epoch of {name} goes (ms per epoch{k}; an indented part is inside the one above "
              f"it):")
        for indent, text, ms in parts:
            print(f"  {'  ' * indent + text:<76} {ms:9.2f}")
    from dlbench.core.machine import describe  # called last: its load average then covers the measurement
    print(f"\nHardware/software: {describe()}")
    print(f"Command: python {shlex.join(['benchmarks/overhead.py', *(sys.argv[1:] if argv is None else argv)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
