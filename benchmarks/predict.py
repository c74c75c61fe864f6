"""Speed of ``dlbench predict`` and ``dlbench serve``, each as a ratio against a baseline measured in the same run.

* predict: ``dlbench predict`` (the real function, in this process) over N MNIST test digits written as PNG files,
  against the same files decoded by the same code alone plus a plain ``torch.no_grad()`` loop of the model over the
  decoded tensors in batches of the same size. Goal: predict within 1.5x of decode + plain loop: what the Lightning
  Trainer, the prediction writer and the CSV cost on top of the work itself.
* serve: a real ``dlbench serve`` on 127.0.0.1 answering ``--clients`` concurrent clients (each sending its share of
  ``--requests`` PNG uploads, one at a time), with request batching (``--max_batch_size 32``) against one request
  at a time (``--max_batch_size 1``). Goal: at least 3x the requests a second at 32 clients.

The model (``--model``, default ``cnn``) is trained for a few batches on MNIST with its default size (speed does not
depend on how well it learned). MNIST comes from ``$DLBENCH_TEST_DATA/mnist`` or ``--root``.

    python benchmarks/predict.py --threads 1
    python benchmarks/predict.py --files 2000 --requests 320 --skip-serve
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GOAL_PREDICT = 1.5
GOAL_SERVE = 3.0


def write_pngs(root: Path, folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(images[i % len(images)]).save(path)
        paths.append(path)
    return paths


def train(root: Path, home: Path, model: str) -> Path:
    command = [sys.executable, "-m", "dlbench", "fit", "--model", model, "--data", "mnist", "--data.root", str(root),
               "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "20", "--trainer.limit_val_batches", "2",
               "--test_after_fit", "false", "--trainer.enable_progress_bar", "false"]
    subprocess.run(command, cwd=home, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return home / "lightning_logs" / model / "version_0"


def bench_predict(run: Path, files: list[Path], batch_size: int, repeats: int) -> dict[str, float]:
    import torch

    from dlbench.data.predict import Source
    from dlbench.runs.trained import TrainedRun
    from dlbench.tools.predict import load_predictor, predict

    source = TrainedRun.open(run)
    predictor = load_predictor(source)
    model = source.load_model()
    decode, loop, whole = [], [], []
    out = run.parent.parent / "bench-predictions.csv"
    for _ in range(repeats):
        start = time.perf_counter()
        values = [predictor.read(Source(name=str(p), path=p), {})[0].value[0] for p in files]
        decode.append(time.perf_counter() - start)
        x = torch.stack(values)
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i: i + batch_size]).softmax(-1).argmax(-1).tolist()
        loop.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = predict(run, [str(p) for p in files], output=out, batch_size=batch_size)
        whole.append(time.perf_counter() - start)
        assert len(result.rows) == len(files) and not result.errors
    d, p, w = (statistics.median(v) for v in (decode, loop, whole))
    return {"decode": d, "loop": p, "predict": w, "ratio": w / (d + p)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes, boundary: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        json.loads(response.read())
        return response.status


def bench_serve(run: Path, png: Path, max_batch_size: int, clients: int, requests: int) -> float:
    """Requests a second that ``clients`` concurrent clients get from a real server."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "dlbench", "serve", "--run", str(run), "--port", str(port),
                               "--max_batch_size", str(max_batch_size), "--batch_timeout", "0.005"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{png.name}\"\r\n\r\n"
    body = head.encode() + png.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not come up in 180 s") from None
                time.sleep(0.5)
        with ThreadPoolExecutor(max_workers=clients) as pool:  # warm-up: every client once
            list(pool.map(lambda _: _post(f"{url}/predict", body, boundary), range(clients)))
            start = time.perf_counter()
            statuses = list(pool.map(lambda _: _post(f"{url}/predict", body, boundary), range(requests)))
            seconds = time.perf_counter() - start
        assert all(s == 200 for s in statuses)
        return requests / seconds
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("DLBENCH_TEST_DATA", ".")) / "mnist",
                        help="folder with MNIST's t10k-images-idx3-ubyte.gz")
    parser.add_argument("--model", default="cnn", help="image classifier plugin to train and serve (default cnn)")
    parser.add_argument("--files", type=int, default=10_000, help="PNG files to predict (default 10000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-predict", action="store_true")
    args = parser.parse_args(argv)
    if not (args.root / "t10k-images-idx3-ubyte.gz").is_file():
        parser.error(f"no MNIST under {args.root}: give --root or set DLBENCH_TEST_DATA")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        run = train(args.root.resolve(), home, args.model)
        files = write_pngs(args.root, home / "pngs", args.files)
        p = None if args.skip_predict else bench_predict(run, files, args.batch_size, args.repeats)
        if p is not None:
            print(f"predict {len(files)} PNG files: decode {p['decode']:.2f} s + plain no_grad loop {p['loop']:.2f} s "
                  f"= {p['decode'] + p['loop']:.2f} s; dlbench predict {p['predict']:.2f} s -> {p['ratio']:.2f}x "
                  f"(goal <= {GOAL_PREDICT}x: {'met' if p['ratio'] <= GOAL_PREDICT else 'MISSED'})")
        if not args.skip_serve:
            one = bench_serve(run, files[0], 1, args.clients, args.requests)
            batched = bench_serve(run, files[0], 32, args.clients, args.requests)
            ratio = batched / one
            print(f"serve, {args.clients} concurrent clients, {args.requests} requests: one at a time {one:.1f} req/s, "
                  f"batched (max 32) {batched:.1f} req/s -> {ratio:.2f}x (goal >= {GOAL_SERVE}x: "
                  f"{'met' if ratio >= GOAL_SERVE else 'MISSED'})")
    from dlbench.core.machine import describe

    print(f"Hardware/software: {describe()}")
    print(f"Command: python benchmarks/predict.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
