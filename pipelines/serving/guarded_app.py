"""The app `python -m pipelines serve` runs under uvicorn: MLflow's scoring server (the very app
`mlflow models serve` runs, `mlflow.pyfunc.scoring_server.app`) behind a guard that refuses
hostile bodies cheaply, before MLflow reads and parses them.

Why a guard: MLflow 3.17's scoring server has a request *timeout* (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT,
`mlflow models serve -t`, answered 504) but no body size limit, and neither has uvicorn. Measured
against `make serve-digits` without it: a 48 MB body was read and parsed for 9 s before the batch
limit refused it, and a body nested 100,000 lists deep answered 500 (the JSON parser's
RecursionError, which MLflow does not catch). With it:

- a body over `PIPELINES_SERVE_MAX_BODY_BYTES` (`serve --max-body-mb`) is answered 413 from its
  Content-Length, before it is read (a client that sent `Expect: 100-continue`, as curl does
  for large bodies, never sends it; one that did not gets the answer at once, and what it still
  sends is read and dropped, unparsed, for a bounded time, so that it reads its answer instead of
  a connection reset);
- a JSON body that Python's parser refuses (too deep, invalid, not UTF-8, an integer of more
  than 4,300 digits) is answered 400 with a one-line reason (MLflow would echo the whole body);
- everything else goes to MLflow's app unchanged.

It runs in every scoring worker: it imports mlflow, the standard library and
`pipelines.core.runtime` (no TensorFlow of its own, no Keras).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

from pipelines.core.runtime import quiet_stderr

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BODY_ENV = "PIPELINES_SERVE_MAX_BODY_BYTES"
# A refused body still coming (no `Expect: 100-continue`) is read and dropped, unparsed, up to this
# many times the limit and this many seconds: then the connection closes.
DRAIN_FACTOR = 10
DRAIN_SECONDS = 10.0


def _json_problem(body: bytes) -> str | None:
    """Why Python's JSON parser (the one MLflow uses) refuses `body`, in one line; None if it parses."""
    try:
        json.loads(body)
    except RecursionError:
        return "the JSON is nested too deeply to parse"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, "Exceeds the limit (4300 digits)"
        return f"the body is not valid JSON: {str(exc).splitlines()[0][:200]}"
    return None


class BodyGuard:
    """ASGI middleware: size limit (413) and JSON that parses (400) before the app sees a body."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        too_big = (f"the body is over the server's limit of {self.max_bytes / 2**20:g} MB; split the batch "
                   "(or start the server with a larger --max-body-mb)")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            expects = b"100-continue" in headers.get(b"expect", b"").lower()
            return await self._refuse(send, 413, too_big, None if expects else receive)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:  # chunked, or a Content-Length that lied
                return await self._refuse(send, 413, too_big, receive if message.get("more_body") else None)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json":
            problem = _json_problem(body)
            if problem:
                return await self._refuse(send, 400, problem, None)

        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: wait for the client to go away
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send, status: int, message: str, drain) -> None:
        """Answer `status` with MLflow's error body at once. `drain`: the rest of the body is still
        coming: read and drop it (at most DRAIN_FACTOR x the limit, DRAIN_SECONDS) before the
        connection closes, as nginx's lingering close does, so that a client still sending gets
        this answer rather than a connection reset."""
        code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "BAD_REQUEST"
        content = json.dumps({"error_code": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": content, "more_body": drain is not None})
        if drain is None:
            return
        dropped, deadline = 0, asyncio.get_running_loop().time() + DRAIN_SECONDS
        with contextlib.suppress(TimeoutError):
            while dropped <= DRAIN_FACTOR * self.max_bytes:
                part = await asyncio.wait_for(drain(), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
                dropped += len(part.get("body", b""))
                if part["type"] != "http.request" or not part.get("more_body"):
                    break
        await send({"type": "http.response.body", "body": b""})


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (oneDNN, absl::InitializeLog) go to fd 2 of every worker,
    and TF_CPP_MIN_LOG_LEVEL does not hide them: import it first with fd 2 set aside (replayed if
    the import fails); the model's own `import tensorflow` then finds it loaded."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        with quiet_stderr():
            import tensorflow  # noqa: F401


_import_tensorflow_quietly()

from mlflow.pyfunc.scoring_server.app import app as scoring_app  # noqa: E402  (loads the model)

app = BodyGuard(scoring_app, int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY_BYTES))
