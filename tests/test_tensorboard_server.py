"""The real TensorBoard server over real dlbench runs: what its web page asks its HTTP data API for, the runs, their
scalar curves and the HParams table with real metric values, is there."""

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
TINY = ("--trainer.max_epochs", "2", "--model.num_layers", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--test_after_fit", "false")
SIZES = {8, 16}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """lightning_logs/lstm/version_{0,1} of two real runs, hidden_size 8 and 16, trained at the same time."""
    root = tmp_path_factory.mktemp("tensorboard")
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
    procs = [subprocess.Popen([sys.executable, "-m", "dlbench", "fit", "--model", "lstm", "--model.hidden_size",
                               str(size), *TINY], cwd=root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for size in sorted(SIZES)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
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


SESSION_GROUPS_REQUEST = {
    "experimentName": "",
    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
    "colParams": [{"hparam": "model/hidden_size", "includeInResult": True},
                  {"hparam": "plugin", "includeInResult": True},
                  {"metric": {"tag": "val/rmse", "group": ""}, "includeInResult": True},
                  {"metric": {"tag": "val/rmse_best", "group": ""}, "includeInResult": True}],
    "startIndex": 0,
    "sliceSize": 100,
}


def test_tensorboard_serves_both_runs_their_curves_and_hparams_with_real_metrics(logdir, server):
    runs = {f"lstm/{d.name}": d for d in (logdir / "lstm").iterdir()}
    assert len(runs) == 2
    assert set(_until(lambda: _get(server, "/data/runs"), lambda r: set(r) >= set(runs))) == set(runs)

    tags = _until(lambda: _get(server, "/data/plugin/scalars/tags"), lambda t: set(t) >= set(runs))
    for run in runs:
        assert {"train/loss", "val/loss", "val/rmse", "val/rmse_best"} <= set(tags[run])

    last_rmse = {}
    for run, run_dir in runs.items():
        served = _get(server, "/data/plugin/scalars/scalars", run=run, tag="val/rmse")  # [[wall_time, step, value]]
        expected = read_scalars(run_dir)["val/rmse"]
        assert [step for _, step, _ in served] == [step for step, _ in expected]
        assert [value for _, _, value in served] == pytest.approx([value for _, value in expected])
        assert len(served) == 2  # one validation per epoch
        last_rmse[run] = served[-1][2]

    experiment = _post(server, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"model/hidden_size", "model/lr", "data/batch_size", "trainer/max_epochs", "seed", "plugin"} <= hparams
    assert [m["name"]["tag"] for m in experiment["metricInfos"]][:2] == ["val/rmse", "val/rmse_best"]

    groups = _until(lambda: _post(server, "/data/plugin/hparams/session_groups", SESSION_GROUPS_REQUEST),
                    lambda g: len(g.get("sessionGroups", [])) == 2)["sessionGroups"]
    by_run = {g["name"]: g for g in groups}
    assert set(by_run) == set(runs)
    sizes = set()
    for run, group in by_run.items():
        sizes.add(int(group["hparams"]["model/hidden_size"]))
        assert group["hparams"]["plugin"] == "lstm"
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert math.isfinite(metrics["val/rmse"]) and metrics["val/rmse"] > 0  # a real value, not a placeholder
        assert metrics["val/rmse"] == pytest.approx(last_rmse[run])
        assert metrics["val/rmse_best"] == pytest.approx(min(v for _, v in read_scalars(runs[run])["val/rmse"]))
    assert sizes == SIZES
