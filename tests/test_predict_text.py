"""``dlbench predict`` for the text plugins, end to end: a transformer classifies and a seq2seq run translates a
user's own lines. Real tiny fits on the default (generated) data, a real text file with a blank line and standard
input, predicted in a new process from a copy of the run that has nothing but ``predictor.json`` to rebuild the
preprocessing from (its checkpoints stripped of their predictor record, its config's data module a class that does
not exist), and checked against the model's forward on tensors the test prepares."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import dlbench

from dlbench.core import registry
from dlbench.data.predict import InputError, Source, predictor_from_record
from dlbench.data.text import BOS_INDEX, EOS_INDEX, UNK_INDEX
from dlbench.runs.trained import TrainedRun

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PLUGINS = ("transformer", "seq2seq")
LINES = {  # line 2 is blank; the last line holds a word no vocabulary has
    "transformer": ["the soup was not good", "", "  The Soup That I Did Not Order Was GOOD!  ",
                    "honestly , the movie zzzqx was great"],
    "seq2seq": ["the big red dog sees anna in the garden .", "", "Tom likes a small cat.",
                "a zzzqx follows the teacher ."],
}
STDIN = {"transformer": "we did not see the show , and it was dull\nthe coffee was lovely\n",
         "seq2seq": "lisa helps the old horse .\nthe child paints a boat near the river .\n"}
GOOD = {"transformer": {"input", "text", "prediction", "probability", "top2", "top2_probability"},
        "seq2seq": {"input", "source", "translation"}}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: threads only add overhead on a shared machine


def _predict(*args: str, cwd: Path, stdin: str) -> subprocess.CompletedProcess:
    """The real ``dlbench predict`` with ``stdin`` on its standard input (conftest's dlbench() gives it none)."""
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
    env.update({"PYTHONUNBUFFERED": "1", **ONE_THREAD})
    return subprocess.run([sys.executable, "-m", "dlbench", "predict", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def _fit(plugin: str, home: Path) -> Path:
    spec = registry.plugin(plugin)
    fit = dlbench("fit", "--model", plugin, *spec.tiny_args, "--trainer.max_epochs", "1", "--test_after_fit", "false",
                  "--log_graph", "false", "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar",
                  "false", "--trainer.enable_model_summary", "false", cwd=home, env=ONE_THREAD)
    assert fit.returncode == 0, fit.stderr[-3000:]
    return home / "lightning_logs" / plugin / "version_0"


def _elsewhere(run: Path, to: Path) -> Path:
    """The run as another machine gets it: config.yaml, predictor.json and checkpoints, the checkpoints without the
    predictor record and the config's data module a class that does not exist, so that building the data module,
    or reading the preprocessing from anywhere but predictor.json, fails."""
    shutil.copytree(run / "checkpoints", to / "checkpoints")
    shutil.copy(run / "predictor.json", to / "predictor.json")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = {"class_path": "nowhere.NoSuchDataModule", "init_args": {"root": "/nowhere"}}
    (to / "config.yaml").write_text(yaml.safe_dump(config))
    for path in (to / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        assert checkpoint["callbacks"].pop("SavePredictor")["record"]["state"]  # it was there
        torch.save(checkpoint, path)
    return to


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> dict[str, dict]:
    """Both plugins fitted, then predicted on ``lines.txt`` and standard input (``--input lines.txt -``) from a copy
    of each run that has only predictor.json; the two fits, then the two predictions, run side by side."""
    homes = {p: tmp_path_factory.mktemp(p) for p in PLUGINS}
    with ThreadPoolExecutor(len(PLUGINS)) as pool:
        runs = dict(zip(PLUGINS, pool.map(lambda p: _fit(p, homes[p]), PLUGINS), strict=True))
        for plugin, home in homes.items():
            _elsewhere(runs[plugin], home / "elsewhere" / "run")
            (home / "lines.txt").write_text("\n".join(LINES[plugin]) + "\n")
        procs = dict(zip(PLUGINS, pool.map(lambda p: _predict("--run", "elsewhere/run", "--input", "lines.txt", "-",
                                                               "-o", "rows.jsonl", cwd=homes[p], stdin=STDIN[p]),
                                           PLUGINS), strict=True))
    out = {}
    for plugin, home in homes.items():
        rows_file = home / "rows.jsonl"
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.is_file() else None
        out[plugin] = {"home": home, "run": runs[plugin], "moved": home / "elsewhere" / "run", "proc": procs[plugin],
                       "rows": rows}
    return out


def _texts(plugin: str) -> list[str]:
    """The non-blank lines of the file, then those of standard input, stripped: what the good rows hold."""
    return [t.strip() for t in LINES[plugin] if t.strip()] + STDIN[plugin].splitlines()


def _predictor(case: dict):
    return predictor_from_record(json.loads((case["run"] / "predictor.json").read_text()), "test")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_one_row_a_line_in_order_with_the_blank_line_as_an_error_row(predicted, plugin):
    case = predicted[plugin]
    proc = case["proc"]
    assert proc.returncode in (0, 2) and case["rows"] is not None, proc.stderr[-3000:]
    rows = case["rows"]
    n_stdin = len(STDIN[plugin].splitlines())
    assert [r["input"] for r in rows] == [f"lines.txt:{i}" for i in range(1, len(LINES[plugin]) + 1)] + \
        [f"stdin:{i}" for i in range(1, n_stdin + 1)]
    assert rows[1] == {"input": "lines.txt:2", "error": "lines.txt: line 2 is empty. Delete it or write a text on it "
                                                        "(one example a line); the other lines are predicted."}
    good = [r for r in rows if "error" not in r]
    assert all(set(r) == GOOD[plugin] for r in good), good
    assert [r["text" if plugin == "transformer" else "source"] for r in good] == _texts(plugin)
    if plugin == "seq2seq":  # text up to <eos>, without padding (a barely trained model may say nothing at all)
        assert all(isinstance(r["translation"], str) and not {"<pad>", "<bos>", "<eos>"} & set(r["translation"].split())
                   for r in good)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_blank_line_fails_the_exit_code_while_the_other_lines_are_predicted(predicted, plugin):
    proc = predicted[plugin]["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]  # an example with extra["error"] counts as a failed input
    assert sum("error" not in r for r in predicted[plugin]["rows"]) == len(_texts(plugin))
    assert "dlbench: error: lines.txt: line 2 is empty" in proc.stderr


@pytest.mark.parametrize("plugin", PLUGINS)
def test_predicts_from_predictor_json_alone(predicted, plugin):
    case = predicted[plugin]
    moved = TrainedRun.open(case["moved"])
    assert moved.data_class == "nowhere.NoSuchDataModule"
    assert "SavePredictor" not in (moved.saved.get("callbacks") or {})
    assert case["proc"].returncode in (0, 2) and case["rows"], case["proc"].stderr[-3000:]
    assert "NoSuchDataModule" not in case["proc"].stderr


def _model(case: dict):
    """The model of the checkpoint dlbench predict used (the run's best), loaded with the model class."""
    from dlbench_plugins.seq2seq.model import Seq2SeqTransformer
    from dlbench_plugins.transformer.model import TransformerClassifier

    moved = TrainedRun.open(case["moved"])
    cls = {"transformer": TransformerClassifier, "seq2seq": Seq2SeqTransformer}[moved.plugin_name]
    return cls.load_from_checkpoint(moved.checkpoint, map_location="cpu").eval()


def test_transformer_predictions_are_the_argmax_of_the_models_forward(predicted):
    case = predicted["transformer"]
    predictor = _predictor(case)
    texts = _texts("transformer")
    tokens = predictor.encode(texts)
    # The tokenisation by hand on one line: lower-cased words and marks, the training vocabulary, <unk>, padding.
    vocab = json.loads((case["run"] / "predictor.json").read_text())["state"]["vocab"]
    words = re.findall(r"\w+|[^\w\s]", texts[2].lower())
    assert "zzzqx" in words and "zzzqx" not in vocab
    expected = [vocab.index(w) if w in vocab else UNK_INDEX for w in words]
    assert tokens[2].tolist() == expected + [0] * (predictor.max_len - len(expected))
    with torch.no_grad():
        probs = _model(case)(tokens).softmax(-1)
    good = [r for r in case["rows"] if "error" not in r]
    assert len(good) == len(texts)
    for row, p in zip(good, probs, strict=True):
        assert row["prediction"] == predictor.class_names[int(p.argmax())]
        assert row["probability"] == pytest.approx(float(p.max()), abs=1e-5)
        assert row["top2_probability"] == pytest.approx(float(p.min()), abs=1e-5)


def test_seq2seq_translations_are_the_argmax_of_the_models_forward(predicted):
    case = predicted["seq2seq"]
    predictor = _predictor(case)
    texts = _texts("seq2seq")
    src = predictor.encode(texts)
    assert src[2].tolist()[:3] == [UNK_INDEX if w not in predictor.source_vocab else predictor.source_vocab.stoi[w]
                                   for w in ("a", "zzzqx", "follows")]
    assert (src == EOS_INDEX).sum(1).tolist() == [1] * len(texts)
    model = _model(case)
    # Greedy decoding from the teacher-forced forward: each next word is the argmax given the words before it.
    out = torch.full((len(texts), 1), BOS_INDEX)
    with torch.no_grad():
        for _ in range(predictor.max_len - 1):
            out = torch.cat([out, model(src, out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = [predictor.decode(ids) for ids in out[:, 1:].tolist()]
    good = [r for r in case["rows"] if "error" not in r]
    assert [r["translation"] for r in good] == expected


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_text_on_its_own_is_one_example_and_bad_sources_say_why(predicted, plugin, tmp_path):
    predictor = _predictor(predicted[plugin])
    # What a server passes for {"text": "..."}: one example, new lines and all, under the source's name.
    (example,) = predictor.read(Source(name="request", text=" The soup\nwas good "), {})
    assert example.key == "request" and example.extra == {"text": "The soup\nwas good"}
    assert example.value[0].tolist() == predictor.encode(["the soup was good"])[0].tolist()
    with pytest.raises(InputError, match=r"^request: the text is empty\. Give the text"):
        predictor.read(Source(name="request", text="  \n "), {})
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(InputError, match=r"blank\.txt: it has only blank lines\. Give a text file of one example"):
        predictor.read(Source(name="blank.txt", path=tmp_path / "blank.txt"), {})
    # The state is plain JSON and rebuilds the same predictor.
    state = json.loads(json.dumps(predictor.state()))
    assert type(predictor).from_state(state).state() == predictor.state()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_line_longer_than_the_run_reads_is_cut_and_said_so(predicted, plugin, capsys):
    predictor = _predictor(predicted[plugin])
    long = " ".join(["the"] * (predictor.max_len + 5))
    (example,) = predictor.read(Source(name="stdin", text=long + "\n"), {})
    assert example.key == "stdin:1"
    ids = example.value[0].tolist()
    assert len(ids) == predictor.max_len and 0 not in ids  # cut, not padded (seq2seq: its last is <eos>)
    assert "dlbench: stdin:1: longer than the" in capsys.readouterr().err
