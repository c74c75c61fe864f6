"""The real TensorBoard server over real dlbench runs: what its web page asks its HTTP data API for, the runs, their
scalar curves and the HParams table with real metric values, is there, for runs of different plugins side by side."""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from dlbench.runs import read_scalars

REQUEST_TIMEOUT = 5.0
STARTUP_TIMEOUT = 30.0
QUIET = ("--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--test_after_fit", "false")
# Two lstm runs that differ in one size, and an mlp run: another plugin, other hyperparameters, another monitor.
COMMANDS = [("lstm", "--model.num_layers", "1", "--model.hidden_size", "8"),
            ("lstm", "--model.num_layers", "1", "--model.hidden_size", "16"),
            ("mlp", "--model.hidden_sizes", "[16]")]
SIZES = {8, 16}
MONITOR = {"lstm": ("val/rmse", min), "mlp": ("val/acc", max)}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """lightning_logs/lstm/version_{0,1} (hidden_size 8 and 16) and lightning_logs/mlp/version_0: three real runs,
    trained at the same time."""
    root = tmp_path_factory.mktemp("tensorboard")
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
    procs = [subprocess.Popen([sys.executable, "-m", "dlbench", "fit", "--model", plugin, *args, *QUIET], cwd=root,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for plugin, *args in COMMANDS]
    try:
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
    finally:  # a run that hangs or a failed wait leaves no training process behind
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for (plugin, *_), proc, err in zip(COMMANDS, procs, errors, strict=True):
        assert proc.returncode == 0, f"dlbench fit --model {plugin} failed:\n{err}"
    return root / "lightning_logs"


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:  # also keeps the pipe drained while the server runs
        lines.put(line)


@pytest.fixture
def server(logdir) -> Iterator[str]:
    """``tensorboard --logdir`` on a port the OS picks, loopback only; stopped however the test ends."""
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", "0", "--reload_interval", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    try:
        deadline, url, seen = time.monotonic() + STARTUP_TIMEOUT, None, []
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                pytest.fail(f"tensorboard did not start (exit code {proc.poll()}):\n{''.join(seen)}")
            try:
                seen.append(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", seen[-1])
            url = match.group(1) if match else None
        yield url
    finally:
        # The server may have started its data-server helper: stop the whole process group this test started.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _get(url: str, path: str, **query: str) -> Any:
    full = f"{url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(full, timeout=REQUEST_TIMEOUT) as response:
        return json.load(response)


def _post(url: str, path: str, body: dict) -> Any:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
        return json.load(response)


def _until(fetch: Callable[[], Any], ready: Callable[[Any], bool], seconds: float = 30.0) -> Any:
    """Ask again until the server has loaded what the test needs (it reads the event files in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = fetch()
            if ready(answer):
                return answer
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as err:
            answer = err
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not serve the runs in {seconds:.0f} s; last answer: {answer!r}")
        time.sleep(0.5)


def _session_groups_request(experiment: dict) -> dict:
    """What the HParams dashboard asks for: every hparam and every metric column of the experiment, every status."""
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment["hparamInfos"]]
    columns += [{"metric": m["name"], "includeInResult": True} for m in experiment["metricInfos"]]
    return {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": columns, "startIndex": 0, "sliceSize": 100}


def test_tensorboard_serves_all_runs_their_curves_and_hparams_of_both_plugins_with_real_metrics(logdir, server):
    runs = {f"{d.parent.name}/{d.name}": d for d in logdir.glob("*/version_*")}
    assert sorted(runs) == ["lstm/version_0", "lstm/version_1", "mlp/version_0"]
    assert set(_until(lambda: _get(server, "/data/runs"), lambda r: set(r) >= set(runs))) == set(runs)

    tags = _until(lambda: _get(server, "/data/plugin/scalars/tags"), lambda t: set(t) >= set(runs))
    last, best = {}, {}
    for run, run_dir in runs.items():
        monitor, better = MONITOR[run.split("/")[0]]
        assert {"train/loss", "val/loss", monitor, f"{monitor}_best"} <= set(tags[run])
        served = _get(server, "/data/plugin/scalars/scalars", run=run, tag=monitor)  # [[wall_time, step, value]]
        expected = read_scalars(run_dir)[monitor]
        assert [step for _, step, _ in served] == [step for step, _ in expected]
        assert [value for _, _, value in served] == pytest.approx([value for _, value in expected])
        assert len(served) == 2  # one validation per epoch
        last[run], best[run] = served[-1][2], better(value for _, _, value in served)

    # One experiment for the whole log directory, built from every run: no run's own summary hides the others'.
    experiment = _post(server, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    lstm_only = {"model/hidden_size", "model/num_layers", "data/window"}
    mlp_only = {"model/hidden_sizes", "model/activation"}
    shared = {"model/lr", "data/batch_size", "trainer/max_epochs", "seed", "plugin"}
    assert shared | lstm_only | mlp_only <= set(hparams)
    assert set(hparams["plugin"]["domainDiscrete"]) == {"lstm", "mlp"}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"val/rmse", "val/rmse_best", "val/acc", "val/acc_best", "val/loss", "train/loss"} <= metrics

    request = _session_groups_request(experiment)
    groups = _until(lambda: _post(server, "/data/plugin/hparams/session_groups", request),
                    lambda g: len(g.get("sessionGroups", [])) == len(runs))["sessionGroups"]
    by_run = {g["name"]: g for g in groups}
    assert set(by_run) == set(runs)
    sizes = set()
    for run, group in by_run.items():
        plugin = run.split("/")[0]
        monitor, _ = MONITOR[plugin]
        assert group["hparams"]["plugin"] == plugin
        own, other = (lstm_only, mlp_only) if plugin == "lstm" else (mlp_only, lstm_only)
        assert own <= set(group["hparams"]) and not other & set(group["hparams"])
        if plugin == "lstm":
            sizes.add(int(group["hparams"]["model/hidden_size"]))
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert math.isfinite(values[monitor]) and values[monitor] > 0  # a real value, not a placeholder
        assert values[monitor] == pytest.approx(last[run])
        assert values[f"{monitor}_best"] == pytest.approx(best[run])
        assert values["val/loss"] == pytest.approx(read_scalars(runs[run])["val/loss"][-1][1])
        other_monitor = MONITOR["mlp" if plugin == "lstm" else "lstm"][0]
        assert other_monitor not in values  # a metric the run never logged has no value, not a 0
    assert sizes == SIZES
