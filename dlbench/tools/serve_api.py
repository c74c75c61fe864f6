"""The LitServe API of ``dlbench serve`` (see :mod:`dlbench.tools.serve`): imported only when a server starts, as it
imports LitServe, and importable by the worker processes LitServe starts."""

from __future__ import annotations

import json
from typing import Any

import litserve as ls

from dlbench.core.errors import DlbenchError
from dlbench.data.predict import Example, InputError, Sink, Source, cpu_outputs


class _Failed:
    """A request that could not be decoded: answered with HTTP 400 and ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RunAPI(ls.LitAPI):
    """One trained run behind ``/predict``."""

    def __init__(self, run: str, ckpt_path: str | None, options: dict[str, Any], max_batch_size: int,
                 batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.run, self.ckpt_path, self.options = run, ckpt_path, options

    def setup(self, device) -> None:
        from dlbench.runs.trained import TrainedRun
        from dlbench.tools.predict import checkpoint_of, load_predictor, predicts_from

        source = TrainedRun.open(checkpoint_of(self.run, self.ckpt_path))
        self.predictor = load_predictor(source)
        self.model = source.load_model().to(device)
        self.model.predict_options = self.options
        self.mode = predicts_from(self.model, self.predictor)
        self.device = device

    def decode_request(self, request) -> Any:
        try:
            return self._examples(request)
        except InputError as err:
            return _Failed(str(err))
        except DlbenchError as err:
            return _Failed(str(err))

    def _examples(self, request) -> list[Example]:
        if self.mode == "samples":
            options = {**self.options, **{k: request[k] for k in ("num_samples", "seed") if k in request}}
            return self.predictor.generate(options)
        upload = request.get("file") if hasattr(request, "get") else None
        if upload is not None and hasattr(upload, "read"):
            data = upload.file.read() if hasattr(upload, "file") else upload.read()
            source = Source(name=getattr(upload, "filename", None) or "upload", data=data)
        elif isinstance(request, dict) and isinstance(request.get("text"), str):
            source = Source(name="text", text=request["text"])
        elif isinstance(request, dict) and isinstance(request.get("rows"), list):
            examples: list[Example] = []
            for i, record in enumerate(request["rows"]):
                if not isinstance(record, dict):
                    raise InputError(f"rows[{i}] is not a JSON object of column: value.")
                examples += self.predictor.read(Source(name=f"row {i}", record=record), self.options)
            return examples
        else:
            raise InputError("the request holds no input: send a file as multipart field 'file' (curl -F "
                             "file=@x.png), or JSON {\"text\": \"...\"} or {\"rows\": [{...}]}.")
        examples = list(self.predictor.read(source, self.options))
        if not examples:
            raise InputError(f"{source.name}: nothing to predict in it.")
        if all(e.extra.get("error") for e in examples):
            raise InputError(str(examples[0].extra["error"]))
        return examples

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def predict(self, inputs: Any) -> list[Any]:
        import torch

        single = self.max_batch_size <= 1
        requests = [inputs] if single else inputs
        flat = [e for r in requests if not isinstance(r, _Failed) for e in r if not e.extra.get("error")]
        rows: list[dict[str, Any]] = []
        if flat:
            batch = self.predictor.collate([e.value for e in flat])
            batch = _to(batch, self.device)
            with torch.inference_mode():
                outputs = self.model.predict_step(batch, 0)
            outputs = cpu_outputs(outputs)
            rows = self.predictor.rows(outputs, flat, self.options, Sink(None))
        answers: list[Any] = []
        for r in requests:
            if isinstance(r, _Failed):
                answers.append(r)
                continue
            mine = []
            for e in r:  # one bad part of a request (an empty line) is answered in its place
                if e.extra.get("error"):
                    mine.append({"input": e.key, "error": str(e.extra["error"])})
                else:
                    mine.append(rows.pop(0))
            answers.append(mine)
        return answers[0] if single else answers

    def encode_response(self, output: Any):
        from fastapi.responses import JSONResponse

        if isinstance(output, _Failed):
            return JSONResponse({"error": output.reason}, status_code=400)
        if len(output) == 1:
            return JSONResponse(_plain(output[0]))
        return JSONResponse({"rows": [_plain(r) for r in output]})



def _to(batch: Any, device) -> Any:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON takes it (the image paths a server does not write are left out)."""
    return json.loads(json.dumps({k: v for k, v in row.items() if not (k == "image" and v == "")}, default=str))
