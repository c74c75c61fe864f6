"""``dlbench serve``: a trained run over HTTP, on LitServe (Lightning's serving engine; ``pip install dlbench[serve]``).

``POST /predict`` takes a file upload (multipart field ``file``), JSON ``{"text": "..."}`` (text models) or
``{"rows": [{...}, ...]}`` (tabular), or ``{}`` for models that draw samples, and answers the JSON object of one
``dlbench predict`` row (``{"rows": [...]}`` when one request holds several examples). The same predictor and the same
``predict_step`` as ``dlbench predict`` decode and answer, so both give the same rows. Requests that arrive together
(within ``--batch_timeout``) are batched, up to ``--max_batch_size``. A request that cannot be used is answered with
HTTP 400 and the reason; the others in its batch are answered as usual and the server keeps serving.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dlbench.core.errors import DlbenchError


def _api_class():
    try:
        import litserve  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: LitServe's file uploads)
    except ImportError:
        raise DlbenchError("dlbench serve runs on LitServe, which is not installed: pip install 'dlbench[serve]' (or "
                           "pip install litserve python-multipart).") from None
    from dlbench.tools.serve_api import RunAPI

    return RunAPI


def make_server(run: str, ckpt_path: str | None = None, options: dict[str, Any] | None = None,
                max_batch_size: int = 16, batch_timeout: float = 0.01, workers: int = 1, accelerator: str = "cpu"):
    """The LitServer of a run, not yet started."""
    import litserve as ls

    from dlbench.runs.trained import TrainedRun
    from dlbench.tools.predict import checkpoint_of, load_predictor

    load_predictor(TrainedRun.open(checkpoint_of(run, ckpt_path)))  # fail here, in one line, not in a worker
    api = _api_class()(run, ckpt_path, options or {}, max_batch_size, batch_timeout)
    return ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers, timeout=60)


def cmd_serve(args: argparse.Namespace) -> int:
    if not Path(args.run).exists():
        raise DlbenchError(f"{args.run} does not exist. Give a run directory (lightning_logs/<plugin>/version_N) or a "
                           f".ckpt file.")
    if args.max_batch_size < 1 or args.workers < 1:
        raise DlbenchError("--max_batch_size and --workers must be >= 1.")
    _api_class()  # LitServe installed?
    options = {k: v for k, v in {"top_k": args.top_k, "horizon": args.horizon}.items() if v is not None}
    server = make_server(args.run, args.ckpt_path, options, args.max_batch_size, args.batch_timeout, args.workers,
                         args.accelerator)
    print(f"dlbench: serving {args.run} on http://{args.host}:{args.port}/predict (Ctrl-C stops)", flush=True)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", prog="dlbench serve", help="serve a trained run over HTTP (LitServe)",
        description="Serve a trained run over HTTP with LitServe: POST /predict takes a file (multipart field 'file'), "
                    "JSON {\"text\": ...} or {\"rows\": [...]}, and answers one predict row as JSON. Needs "
                    "pip install 'dlbench[serve]'.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="the trained run, or a .ckpt file")
    p.add_argument("--ckpt_path", metavar="best|last|FILE", help="which checkpoint (default: the run's best)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="inference worker processes (default 1)")
    p.add_argument("--max_batch_size", type=int, default=16, help="requests batched together at most (default 16)")
    p.add_argument("--batch_timeout", type=float, default=0.01,
                   help="seconds to wait for more requests to fill a batch (default 0.01)")
    p.add_argument("--accelerator", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--top_k", type=int, help="class probabilities to list for classifiers (default 3)")
    p.add_argument("--horizon", type=int, help="lstm: steps to forecast (default 1)")
    p.set_defaults(func=cmd_serve)
    return p
