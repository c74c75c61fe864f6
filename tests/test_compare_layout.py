"""``dlbench compare`` at the scale of an afternoon of runs: the table fits 100 columns, runs of different datasets or
monitors are separate tables, values derived from the data are no differences, evaluations sit under their run,
``--columns`` and ``--all``, and the plot's legend beside the curves at 100 runs.

The runs are written by dlbench's own logger (:class:`dlbench.train.logger.RunLogger`: event files with the HParams
session summary, hparams.yaml) with the status.json its RunStatus callback writes; evaluations by its
:class:`~dlbench.train.logger.EvaluationLogger`. They are read back by TensorBoard's reader, as every run is.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import dlbench

WIDTH = 100
SCORES = {"val/acc": ("test/acc", "test/acc_majority"), "val/rmse": ("test/rmse", "test/rmse_persistence")}
NO_COLUMNS = {"COLUMNS": ""}  # the width comes from the terminal: here a pipe, so 100
STEPS = 7


def write_run(root: Path, plugin: str, monitor: str, values: list[float], *, dataset: str | None, model: dict,
              data: dict, data_class: str, test: tuple[float, float] | None = None, config_monitor: str | None = None,
              status: str = "finished") -> Path:
    """A run as ``dlbench fit`` leaves it: ``values`` of ``monitor`` once an epoch, a decreasing train/loss, the test
    score and its baseline. ``dataset=None`` writes a run from before dlbench logged that hyperparameter."""
    from dlbench.train.logger import RunLogger

    logger = RunLogger(save_dir=str(root), name=plugin, log_graph=False)
    params = {"plugin": plugin, "plugin_dist": "dlbench 0.1.0", "dlbench_version": "0.1.0", "dataset": dataset,
              "seed": 42, "model": {"class": "Net", **model}, "data": {"class": data_class, **data},
              "trainer": {"max_epochs": len(values)}}
    if dataset is None:
        del params["dataset"]
    logger.run_params = params
    logger.log_hyperparams({})
    for epoch, value in enumerate(values):
        logger.log_metrics({monitor: value, "train/loss": 2.0 / (epoch + 1), "epoch": epoch}, (epoch + 1) * STEPS - 1)
    if test is not None:
        score, baseline = SCORES[monitor]
        logger.log_metrics({score: test[0], baseline: test[1]}, len(values) * STEPS)
    logger.finalize("success")
    run = Path(logger.log_dir)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / f"best-epoch={len(values) - 1}-step={len(values) * STEPS}.ckpt").write_bytes(b"")
    (run / "status.json").write_text(json.dumps({"status": status, "epochs": len(values), "steps": len(values) * STEPS,
                                                 "train_seconds": 2.5 * len(values), "started": time.time()}))
    if config_monitor:
        (run / "config.yaml").write_text(yaml.safe_dump({"checkpoint": {"monitor": config_monitor}}))
    return run


def digits_runs(root: Path, count: int, seed: int = 0) -> dict[str, dict]:
    """``count`` runs of cnn, mlp and vit in turn on digits; what was written, by the run's name in the table."""
    rng = random.Random(seed)
    written = {}
    for i in range(count):
        plugin = ("cnn", "mlp", "vit")[i % 3]
        acc = [round(rng.uniform(0.5, 0.99), 4) for _ in range(4)]
        test = (round(rng.uniform(0.5, 0.99), 4), round(rng.uniform(0.05, 0.2), 4))
        run = write_run(root, plugin, "val/acc", acc, dataset="digits", data_class="DigitsDataModule",
                        model={"lr": (0.001, 0.003, 0.01)[i % 3], "hidden_size": 32 * (1 + i % 4),
                               "dropout": 0.1 * (i % 2), "num_classes": 10, "in_channels": 1, "image_size": 8},
                        data={"batch_size": 64 * (1 + i % 2)}, test=test)
        written[f"{plugin}/{run.name}"] = {"best": max(acc), "test": test[0], "baseline": test[1]}
    return written


# ---- reading the text table back ----------------------------------------------------------------------------------

@dataclass
class Table:
    heading: str
    titles: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    under: dict[str, list[str]] = field(default_factory=dict)
    """The lines under each run's row, without their marker."""
    notes: list[str] = field(default_factory=list)


def parse_tables(text: str) -> list[Table]:
    """Every group's table of ``dlbench compare``'s text output: cells cut at the dashes under each title."""
    tables = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.splitlines()
        spans = [m.span() for m in re.finditer(r"-+", lines[2])]
        table = Table(lines[0], [lines[1][a:b].strip() for a, b in spans])
        for line in lines[3:]:
            if line.startswith("  "):
                table.under[table.rows[-1]["run"]].append(line.strip()[1:].strip())
            elif line.startswith(("left out for width", "baseline:")):
                table.notes.append(line)
            else:
                row = {t: line[a:b].strip() for t, (a, b) in zip(table.titles, spans, strict=True)}
                table.rows.append(row)
                table.under[row["run"]] = []
        tables.append(table)
    return tables


def column(table: Table, *titles: str) -> str:
    """The one title of ``table`` among ``titles`` (a column's full or short title)."""
    (found,) = [t for t in table.titles if t in titles]
    return found


@pytest.fixture(scope="module")
def forty(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("forty")
    return root, digits_runs(root / "logs", 40)


def test_forty_runs_of_three_plugins_fit_100_columns_and_keep_what_matters(forty):
    root, written = forty
    result = dlbench("compare", "logs", cwd=root, env=NO_COLUMNS, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= WIDTH, max(lines, key=len)
    (table,) = parse_tables(result.stdout)
    assert "digits" in table.heading and "higher is better" in table.heading and "(40 runs)" in table.heading
    assert {row["run"] for row in table.rows} == set(written) and len(table.rows) == 40
    assert "plugin" in table.titles  # three plugins share the table
    best, test = column(table, "val/acc ↑", "best ↑"), column(table, "test/acc", "test")
    baseline = column(table, "majority class", "baseline")
    for row in table.rows:
        expected = written[row["run"]]
        assert float(row[best]) == pytest.approx(expected["best"], rel=1e-4)
        assert float(row[test]) == pytest.approx(expected["test"], rel=1e-4)
        assert float(row[baseline]) == pytest.approx(expected["baseline"], rel=1e-4)
        assert row["status"] == "finished" and row["plugin"] == row["run"].split("/")[0]
    values = [float(row[best]) for row in table.rows]
    assert values == sorted(values, reverse=True)  # accuracy: higher first
    # The hyperparameters the runs were given differently, not those linked from the data (num_classes, ...).
    titles = " ".join(table.titles)
    assert "hidden_size" in titles and "num_classes" not in titles and "image_size" not in titles
    # What was left out to fit, one line says, and how to see it; what the baseline is, when its title could not.
    left = [note for note in table.notes if note.startswith("left out for width: ")]
    assert len(left) == (len(table.titles) < 12) and all("--all" in n and "--columns" in n for n in left)
    for name in ("epochs", "time"):
        assert (name in table.titles) != any(name in n.split(";")[0].split(": ")[1].split(", ") for n in left)
    assert ("majority class" in table.titles) != ("baseline: majority class (test/acc_majority)" in table.notes)

    narrow = dlbench("compare", "logs", cwd=root, env={"COLUMNS": "60"}, timeout=120)
    assert max(map(len, narrow.stdout.splitlines())) <= 60
    (small,) = parse_tables(narrow.stdout)
    assert {"run", "status"} <= set(small.titles) and len(small.rows) == 40
    assert {row["run"] for row in small.rows} == set(written)  # run names are never cut at 60 columns either


def test_an_ascii_terminal_gets_words_instead_of_arrows(forty):
    root, _ = forty
    result = dlbench("compare", "logs", cwd=root, env={**NO_COLUMNS, "PYTHONIOENCODING": "ascii"}, timeout=120)
    assert result.returncode == 0, result.stderr
    result.stdout.encode("ascii")
    (table,) = parse_tables(result.stdout)
    assert column(table, "val/acc (max)", "best (max)")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict]:
    """lstm on sunspots (two of them older runs without the dataset hyperparameter), lstm on a user's prices.csv,
    cnn on digits, and a plugin of the user's on digits whose monitor is val/loss."""
    root = tmp_path_factory.mktemp("mixed")
    logs, made = root / "logs", {}
    series = {"data_class": "SeriesDataModule", "test": (14.0, 17.5)}
    for i, (hidden, rmse) in enumerate([(8, [30.0, 22.0, 24.0]), (16, [28.0, 19.0, 18.5]), (32, [35.0, 33.0])]):
        # target_mean is linked from the data: it differs with the split, and is no setting of the user's
        run = write_run(logs, "lstm", "val/rmse", rmse, dataset="sunspots" if i else None, **series,
                        model={"hidden_size": hidden, "target_mean": 40.0 + i, "target_std": 30.0, "lr": 0.003},
                        data={"val_fraction": (0.15, 0.2, 0.25)[i], "path": None})
        made[f"lstm/{run.name}"] = ("sunspots", min(rmse), len(rmse))
    for hidden, rmse, dataset in [(8, [9.0, 7.5], "prices.csv"), (16, [8.0, 7.0], None)]:
        run = write_run(logs, "lstm", "val/rmse", rmse, dataset=dataset, **series,
                        model={"hidden_size": hidden, "target_mean": 101.0 + hidden, "target_std": 3.0, "lr": 0.003},
                        data={"val_fraction": 0.15, "path": "/home/me/prices.csv"})
        made[f"lstm/{run.name}"] = ("prices.csv", min(rmse), len(rmse))
    for lr, acc in [(0.01, [0.8, 0.93]), (0.001, [0.7, 0.95])]:
        run = write_run(logs, "cnn", "val/acc", acc, dataset="digits", data_class="DigitsDataModule",
                        model={"lr": lr, "num_classes": 10}, data={"batch_size": 64}, test=(0.9, 0.1))
        made[f"cnn/{run.name}"] = ("digits", max(acc), len(acc))
    run = write_run(logs, "mynet", "val/loss", [0.5, 0.3], dataset="digits", data_class="DigitsDataModule",
                    model={"width": 4}, data={"batch_size": 64}, config_monitor="val/loss")
    made[f"mynet/{run.name}"] = ("digits", 0.3, 2)
    return root, made


def _compare(root: Path, *args: str, code: int = 0, env: dict | None = None):
    result = dlbench("compare", *args, cwd=root, env={**NO_COLUMNS, **(env or {})}, timeout=120)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_datasets_and_monitors_are_separate_tables_each_best_first(mixed):
    root, made = mixed
    tables = {t.heading: t for t in parse_tables(_compare(root, "logs").stdout)}
    assert set(tables) == {"digits · cnn · val/acc, higher is better (2 runs)",
                           "digits · mynet · val/loss, lower is better (1 run)",
                           "prices.csv · lstm · val/rmse, lower is better (2 runs)",
                           "sunspots · lstm · val/rmse, lower is better (3 runs)"}
    for heading, table in tables.items():
        dataset, monitor = heading.split(" · ")[0], heading.split(" · ")[2].split(",")[0]
        assert {r["run"] for r in table.rows} == {name for name, (d, _, _) in made.items() if d == dataset
                                                  and (monitor == "val/loss") == name.startswith("mynet")}
        best = [float(r[column(table, f"{monitor} ↓", f"{monitor} ↑", "best ↓", "best ↑")]) for r in table.rows]
        assert best == sorted(best, reverse="higher" in heading)
        assert best == [made[r["run"]][1] for r in table.rows]
        assert "plugin" not in table.titles  # one plugin a table: the heading names it
    sunspots = tables["sunspots · lstm · val/rmse, lower is better (3 runs)"]
    titles = " ".join(sunspots.titles)
    # What the user set differently shows; what was derived from the data (target_mean) does not.
    assert "hidden_size" in titles and "val_fraction" in titles and "target_mean" not in titles
    assert column(sunspots, "test/rmse", "test") and column(sunspots, "persistence", "baseline")

    # --sort ranks within each group, never across datasets.
    by_loss = parse_tables(_compare(root, "logs", "--sort", "train/loss").stdout)
    assert len(by_loss) == 4 and all("sorted by train/loss" in t.heading for t in by_loss)
    only = parse_tables(_compare(root, "logs", "--filter", "data=prices.csv").stdout)
    assert [t.heading.split(" · ")[0] for t in only] == ["prices.csv"] and len(only[0].rows) == 2

    rows = list(csv.DictReader(io.StringIO(_compare(root, "logs", "--format", "csv").stdout)))
    assert {r["group"] for r in rows} == {"sunspots: val/rmse", "prices.csv: val/rmse", "digits: val/acc",
                                          "digits: val/loss"}
    assert {r["run"]: r["data"] for r in rows} == {name: d for name, (d, _, _) in made.items()}
    assert "model/target_mean" in rows[0] and "plugin" in rows[0]  # machine formats keep everything


def test_columns_picks_and_all_shows_everything(mixed):
    root, made = mixed
    picked = parse_tables(_compare(root, "logs", "--filter", "plugin=lstm", "--columns",
                                   "run,model/hidden_size,best,train/loss,status").stdout)
    assert len(picked) == 2
    for table in picked:
        assert table.titles == ["run", "model/hidden_size", "val/rmse ↓", "train/loss", "status"]
        for row in table.rows:
            assert float(row["train/loss"]) == pytest.approx(2.0 / made[row["run"]][2], rel=1e-4)  # its last
            assert float(row["val/rmse ↓"]) == made[row["run"]][1]
    unknown = _compare(root, "logs", "--columns", "run,hiden_size", code=2)
    assert len(unknown.stderr.strip().splitlines()) == 1 and "model/hidden_size" in unknown.stderr

    everything = parse_tables(_compare(root, "logs", "--all").stdout)
    sunspots = next(t for t in everything if t.heading.startswith("sunspots"))
    assert {"model/target_mean", "model/hidden_size", "plugin", "data", "final", "steps", "params",
            "epochs", "time"} <= set(sunspots.titles)
    assert not sunspots.notes  # nothing left out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A run with two evaluations in its evaluations/ folder and one beside it (its folder was read-only), plus two
    validate/test runs in the older layout: one of that run, one of a run not among those read."""
    from dlbench.train.logger import EvaluationLogger

    root = tmp_path_factory.mktemp("evaluated")
    logs = root / "logs"
    run = write_run(logs, "lstm", "val/rmse", [30.0, 20.0], dataset="sunspots", data_class="SeriesDataModule",
                    model={"hidden_size": 8}, data={}, test=(15.0, 17.5))
    ckpt = str(next((run / "checkpoints").iterdir()).relative_to(root))
    for folder, stage, rmse in [(run / "evaluations", "test", 14.5), (run / "evaluations", "validate", 19.0),
                                (logs / "lstm" / "evaluations" / run.name, "test", 14.25)]:
        logger = EvaluationLogger(save_dir=str(folder), stage=stage, checkpoint=ckpt)
        prefix = "test" if stage == "test" else "val"
        logger.log_metrics({f"{prefix}/rmse": rmse, f"{prefix}/rmse_persistence": 17.5, f"{prefix}/loss": 0.4})
        logger.finalize("success")
    for evaluates in (ckpt, "elsewhere/lstm/version_7/checkpoints/last.ckpt"):
        from torch.utils.tensorboard import SummaryWriter  # the older layout: a TensorBoard run of its own

        old = logs / "lstm" / f"version_{len(list((logs / 'lstm').glob('version_*')))}"
        with SummaryWriter(str(old)) as writer:
            writer.add_scalar("test/rmse", 16.0, 14)
        (old / "hparams.yaml").write_text(yaml.safe_dump({"plugin": "lstm", "model": {"hidden_size": 8},
                                                          "data": {"class": "SeriesDataModule"}}))
        (old / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": evaluates, "model": {}}))
    return root


def test_evaluations_are_shown_under_the_run_they_evaluated(evaluated):
    (table,) = parse_tables(_compare(evaluated, "logs").stdout)
    assert [r["run"] for r in table.rows] == ["lstm/version_0", "lstm/version_2"]  # version_1 is an evaluation
    assert table.rows[1]["status"] == "evaluation"  # of a run not read here: still not 'unknown'
    under = table.under["lstm/version_0"]
    assert [line.split()[0] for line in under] == ["test_0", "validate_0", "version_1", "test_0"]
    assert "test/rmse 14.5" in under[0] and "(best-epoch=1-step=14.ckpt)" in under[0]
    assert "val/rmse 19" in under[1] and "test/rmse 16" in under[2] and "test/rmse 14.25" in under[3]

    records = json.loads(_compare(evaluated, "logs", "--format", "json").stdout)
    assert [(r["run"], len(r["evaluations"])) for r in records] == [("lstm/version_0", 4), ("lstm/version_2", 0)]
    first = records[0]["evaluations"][0]
    assert first["stage"] == "test" and first["metrics"]["test/rmse"] == 14.5 and first["status"] == "success"
    rows = list(csv.DictReader(io.StringIO(_compare(evaluated, "logs", "--format", "csv").stdout)))
    assert [int(r["evaluations"]) for r in rows] == [4, 0]


@pytest.fixture(scope="module")
def hundred(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hundred")
    digits_runs(root / "logs", 100, seed=1)
    write_run(root / "logs", "lstm", "val/rmse", [3.0, 2.0], dataset="sunspots", data_class="SeriesDataModule",
              model={"hidden_size": 8}, data={})
    return root


def test_the_plot_has_one_panel_a_group_and_its_legend_beside_the_curves_at_100_runs(hundred):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dlbench.runs.compare import figure, group_runs, short_names
    from dlbench.runs.run import find_runs, read_run

    runs = [read_run(p) for p in find_runs([hundred / "logs"])]
    groups = group_runs(runs)
    fig, curves = figure(groups, None, short_names([r.path for r in runs], [hundred]))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    assert curves == 101 and len(fig.axes) == 2
    entries = sorted(len(ax.get_legend().get_texts()) for ax in fig.axes)
    assert entries == [1, 100]
    for ax in fig.axes:
        legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(axes), (legend, axes)
        assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 + 1 and legend.y0 >= fig.bbox.y0 - 1

    png = hundred / "curves.png"
    result = _compare(hundred, "logs", "--plot", str(png))
    assert "plotted 101 curves" in result.stderr and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
