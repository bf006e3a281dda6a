"""The ASGI app of `msir serve` (Starlette): predict, timeline, health, and the page.

Every request's audio is decoded (`read_audio`, from memory) and its features
extracted (`Detector.extract`) on a worker thread, so the event loop never
blocks; the models run on the `Batcher`'s single thread, batched across
requests. Errors are JSON `{"error": "<one line>"}`: 422 for audio the CLI
would refuse (the same reason), 413 over a limit, 401 without the API key,
400 for a malformed request, 500 (the server stays up) for a bug.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import io
import json
import os
import threading
import time

from msir_keras.audio import SAMPLE_RATE, AudioError, read_audio
from msir_keras.detector import HOPS_PER_WINDOW, TIMELINE_WINDOW
from msir_keras.service.batcher import Batcher, Cancelled
from msir_keras.service.limits import Limits
from msir_keras.service.uploads import MB, RequestProblem, audio_part, read_body

STATIC = os.path.join(os.path.dirname(__file__), "static")
MAX_WINDOWS = 20000  # windows per timeline at most (22 hours of audio at a 1 s hop)
POLL = 0.05  # seconds between checks that a waiting client is still connected


def _json(content, status=200):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status)


def _error(status, reason):
    return _json({"error": reason}, status)


def _seconds(request, name, default):
    """A query parameter as positive seconds (400 otherwise), or `default` when absent."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < 3600):
        raise RequestProblem(400, f"{name} must be a number of seconds above 0 and below 3600, got {text!r}")
    return value


def model_card(detector, path):
    """What /v1/health says of the model: classes, branches, upstream, training corpus, package version."""
    from msir_keras import __version__

    config = {}
    for folder in (path, os.path.dirname(os.path.dirname(os.path.abspath(path)))):
        candidate = os.path.join(folder, "config.json")
        if os.path.exists(candidate):
            with open(candidate) as handle:
                config = json.load(handle)
            break
    upstream = next((entry["config"].get("source") for entry in detector.feature_config.values()
                     if entry["extractor"] in ("wav2vec2", "upstream")), None)
    return {
        "model": os.path.basename(os.path.normpath(path)),  # health needs no key: no server paths
        "classes": {target: list(names) for target, names in detector.class_names.items()},
        "folds": len(detector.models),
        "inputs": sorted(detector.feature_config),
        "branches": config.get("branches", sorted(detector.feature_config)),
        "upstream": (os.path.basename(os.path.normpath(upstream)) if upstream and os.path.isabs(upstream)
                     else upstream) or "off",
        "corpus": {key: config[key] for key in ("corpus", "emotions", "split", "n_folds") if key in config} or None,
        "task": config.get("task"),
        "threshold": detector.threshold,
        "version": __version__,
    }


def create_app(detector, path, limits=None):
    """The Starlette app serving `detector`.

    Args:
        detector: `msir_keras.detector.Detector`, loaded once.
        path: str. The run or export it was loaded from (health reports it).
        limits: `Limits` or None (the defaults).

    Returns:
        A `starlette.applications.Starlette`; `app.state.batcher` counts batches.
    """
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    limits = limits or Limits()
    max_bytes = int(limits.max_mb * MB)
    card = model_card(detector, path)
    card["limits"] = {"max_mb": limits.max_mb, "max_seconds": limits.max_seconds}
    card["api_key_required"] = limits.api_key is not None
    pool = concurrent.futures.ThreadPoolExecutor(limits.workers or os.cpu_count() or 1,
                                                 thread_name_prefix="msir-extract")
    batcher = Batcher(detector, batch_size=limits.batch_size, max_wait=limits.max_wait)
    log_lock = threading.Lock()

    def log(entry):
        if limits.log_dir is None:
            return
        with log_lock, open(os.path.join(limits.log_dir, "requests.jsonl"), "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def decode(data, name, max_seconds=None):
        """(signal, warnings) of an upload's bytes; AudioError as the CLI gives it, 413 over `max_seconds`."""
        warnings = []
        signal = read_audio(io.BytesIO(data), name=name, warn=lambda w: warnings.append(w.reason))
        duration = len(signal) / SAMPLE_RATE
        if max_seconds is not None and duration > max_seconds:
            raise RequestProblem(413, f"{duration:.1f} s of audio, longer than /v1/predict's limit of "
                                      f"{max_seconds:g} s (`msir serve --max-seconds`); send it to /v1/timeline "
                                      "for one prediction per window")
        return signal, warnings

    def prepare(data, name):
        signal, warnings = decode(data, name, limits.max_seconds)
        features, reason = detector.extract([signal])[0]
        if reason is not None:
            raise AudioError(name, reason)
        return features, len(signal) / SAMPLE_RATE, warnings

    async def audio(request):
        body = await read_body(request, max_bytes)
        return audio_part(body, request.headers.get("content-type"))

    async def while_connected(request, coroutine, cancelled=None):
        """Awaits `coroutine`, cancelling it (and setting `cancelled`) when the client disconnects."""
        task = asyncio.ensure_future(coroutine)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=POLL)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    raise Cancelled()
        except (asyncio.CancelledError, Cancelled):
            task.cancel()  # a request still queued for the model is dropped there
            if cancelled is not None:
                cancelled.set()  # a timeline stops before its next forward pass
            raise

    async def predict(request):
        data, name = await audio(request)
        loop = asyncio.get_running_loop()

        async def work():
            with batcher.expect():
                features, duration, warnings = await loop.run_in_executor(pool, prepare, data, name)
                result = await batcher.score(features)
            if isinstance(result, str):
                raise AudioError(name, result)
            return {"name": name, "duration": round(duration, 4), **_summary(result), "warnings": warnings}

        return _json(await while_connected(request, work()))

    async def timeline(request):
        window = _seconds(request, "window", TIMELINE_WINDOW)
        hop = _seconds(request, "hop", None)
        data, name = await audio(request)
        cancelled = threading.Event()

        def work():
            signal, warnings = decode(data, name)
            windows = len(signal) / SAMPLE_RATE / (hop or window / HOPS_PER_WINDOW)
            if windows > MAX_WINDOWS:
                raise RequestProblem(400, f"about {windows:.0f} windows, more than the {MAX_WINDOWS} a timeline "
                                          "gives at most: choose a longer hop")
            table = detector.signal_timeline(signal, name, window=window, hop=hop,
                                             forward=lambda inputs: batcher.forward(inputs, cancelled))
            return {"name": name, "duration": round(len(signal) / SAMPLE_RATE, 4), "window": window,
                    "hop": hop if hop is not None else window / HOPS_PER_WINDOW, "warnings": warnings,
                    "windows": table.to_dict(orient="records")}

        future = asyncio.get_running_loop().run_in_executor(pool, work)
        return _json(await while_connected(request, future, cancelled))

    async def health(request):
        return _json({"status": "ok", **card, "batches": batcher.batches, "scored": batcher.scored,
                      "window_batches": batcher.window_batches})

    async def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    async def refused(request, problem):
        return _error(problem.status, problem.reason)

    async def bad_audio(request, error):
        return _error(422, error.reason)

    async def gone(request, error):
        from starlette.responses import Response

        return Response(status_code=499)  # nginx's "client closed request": the client left, nothing is sent

    async def bug(request, error):  # one line to the client; uvicorn logs the traceback; the server stays up
        return _error(500, f"internal error: {type(error).__name__}: {error}".splitlines()[0])

    app = Starlette(routes=[
        Route("/", index), Route("/v1/health", health), Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/timeline", timeline, methods=["POST"]), Mount("/static", StaticFiles(directory=STATIC)),
    ], lifespan=lifespan, exception_handlers={RequestProblem: refused, AudioError: bad_audio, Cancelled: gone,
                                              Exception: bug})
    app.state.batcher = batcher
    return _Guard(app, limits.api_key, log)


def _summary(row):
    """A `Detector.score` row as the API's fields: predicted (classifiers), probabilities, decisions."""
    summary = {"probabilities": {k[2:]: v for k, v in row.items() if k.startswith("p_")}}
    summary["decisions"] = {k: v for k, v in row.items() if isinstance(v, bool)}
    if "predicted" in row:
        summary = {"predicted": row["predicted"], **summary}
    return summary


PUBLIC = ("/v1/health", "/", "/static/", "/favicon.ico")


class _Guard:
    """ASGI middleware: the API key (compared in constant time) and the request log."""

    def __init__(self, app, api_key, log):
        self.app = app
        self.state = app.state
        self.api_key = api_key.encode() if api_key else None
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request

        path, started, status = scope["path"], time.perf_counter(), {}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and not (path in PUBLIC or path.startswith("/static/")):
                headers = Request(scope).headers
                given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
                if not hmac.compare_digest(given.encode(), self.api_key):
                    response = _error(401, "a missing or wrong API key: send it as `Authorization: Bearer KEY` "
                                           "or `X-API-Key: KEY`")
                    return await response(scope, receive, sending)
            await self.app(scope, receive, sending)
        finally:
            if path.startswith("/v1/"):
                self.log({"time": time.time(), "method": scope.get("method"), "path": path,
                          "status": status.get("code"), "seconds": round(time.perf_counter() - started, 4)})
