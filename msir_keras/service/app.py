"""The ASGI app of `msir serve` (Starlette): predict, timeline, health, and the page.

Every request's audio is decoded (`read_audio`, from memory) and its features
extracted (`Detector.extract`) on a worker thread, so the event loop never
blocks (timelines on a thread of their own); the models run on the
`Batcher`'s single thread, batched across requests. Errors are JSON
`{"error": "<one line>"}`: 422 for audio the CLI would refuse (the same
reason), 413 over a limit (the header's duration, before decoding), 401
without the API key, 400 for a malformed request, 503 for a request cut
by the shutdown, 500 (an error id; the server stays up) for a bug.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import re
import threading

from msir_keras.audio import SAMPLE_RATE, AudioError, read_audio
from msir_keras.detector import HOPS_PER_WINDOW, TIMELINE_WINDOW, _is_detection
from msir_keras.service.batcher import Batcher, Cancelled
from msir_keras.service.guard import Guard, RequestLog, report_bug
from msir_keras.service.guard import error_response as _error  # one shape for every refusal
from msir_keras.service.limits import Limits, default_threads
from msir_keras.service.uploads import MB, RequestProblem, audio_part, declared_seconds, read_body

STATIC = os.path.join(os.path.dirname(__file__), "static")
MAX_WINDOWS = 20000  # windows per timeline at most (22 hours of audio at a 1 s hop)
MIN_HOP = 0.001  # seconds between timeline windows at least
POLL = 0.05  # seconds between checks that a waiting client is still connected


def _json(content, status=200):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status)


NUMBER = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")  # no "4_0", "inf", "nan", signs or spaces


def _seconds(request, name, default, least):
    """A query parameter as seconds in [least, 3600) (400 otherwise), or `default` when absent."""
    text = request.query_params.get(name)
    if text is None:
        return default
    value = float(text) if NUMBER.fullmatch(text) else None
    if value is None or not value < 3600:
        raise RequestProblem(400, f"{name} must be a positive number of seconds below 3600 (such as 4 or 0.5), "
                                  f"got {text[:40]!r}")
    if value < least:
        raise RequestProblem(400, f"{name} must be at least {least:g} s, got {text[:40]}")
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
        "branches": config.get("branches"),  # an export keeps no run config: its "inputs" say what it reads
        "upstream": (os.path.basename(os.path.normpath(upstream)) if upstream and os.path.isabs(upstream)
                     else upstream) or "off",
        "corpus": {key: config[key] for key in ("corpus", "emotions", "split", "n_folds") if key in config} or None,
        "task": config.get("task") or ("detection" if any(_is_detection(names) for names in
                                                          detector.class_names.values()) else "classification"),
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
        An ASGI app; `app.state.batcher` counts batches.

    Raises:
        ValueError: an empty API key.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    limits = limits or Limits()
    limits.check()
    max_bytes = int(limits.max_mb * MB)
    max_timeline = limits.max_timeline_minutes * 60
    least_window = detector.min_window
    card = model_card(detector, path)
    card["limits"] = {"max_mb": limits.max_mb, "max_seconds": limits.max_seconds,
                      "max_timeline_minutes": limits.max_timeline_minutes}
    card["api_key_required"] = limits.api_key is not None
    # Predicts' decoding and extraction, and timelines', in separate pools: a timeline (whole-file decoding
    # and features, not interruptible) never holds a thread a predict waits for.
    pool = concurrent.futures.ThreadPoolExecutor(limits.workers or default_threads(), thread_name_prefix="msir-extract")
    timelines = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="msir-timeline")
    batcher = Batcher(detector, batch_size=limits.batch_size, max_wait=limits.max_wait)
    log = RequestLog(limits.log_dir)

    def too_long_predict(seconds):
        return (f"{seconds:.1f} s of audio, longer than /v1/predict's limit of {limits.max_seconds:g} s "
                "(`msir serve --max-seconds`); send it to /v1/timeline for one prediction per window")

    def too_long_timeline(seconds):
        return (f"{seconds / 60:.1f} minutes of audio, longer than /v1/timeline's limit of "
                f"{limits.max_timeline_minutes:g} minutes (`msir serve --max-timeline-minutes`)")

    def decode(data, name, max_seconds, over):
        """(signal, warnings) of an upload's bytes; its header checked first (413 over `max_seconds`)."""
        declared_seconds(data, name, max_seconds, over)
        warnings = []
        signal = read_audio(io.BytesIO(data), name=name, warn=lambda w: warnings.append(w.reason))
        if len(signal) / SAMPLE_RATE > max_seconds:
            raise RequestProblem(413, over(len(signal) / SAMPLE_RATE))
        return signal, warnings

    def prepare(data, name):
        signal, warnings = decode(data, name, limits.max_seconds, too_long_predict)
        features, reason = detector.extract([signal])[0]
        if reason is not None:
            raise _warned(AudioError(name, reason), warnings)
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
        except (asyncio.CancelledError, Cancelled) as stop:
            task.cancel()  # a request queued for a worker or for the model is dropped there, never started
            if cancelled is not None:
                cancelled.set()  # a running timeline stops before its next forward pass
            if isinstance(stop, asyncio.CancelledError) and not await request.is_disconnected():
                # uvicorn's graceful-shutdown timeout cancels what still runs: the client is told so
                return _error(503, "the server is shutting down and stopped this request; send it again")
            raise

    async def predict(request):
        data, name = await audio(request)
        loop = asyncio.get_running_loop()

        async def work():
            with batcher.expect():
                features, duration, warnings = await loop.run_in_executor(pool, prepare, data, name)
                result = await batcher.score(features)
            if isinstance(result, str):
                raise _warned(AudioError(name, result), warnings)
            return _json({"name": name, "duration": round(duration, 4), **_summary(result), "warnings": warnings})

        return await while_connected(request, work())

    async def timeline(request):
        window = _seconds(request, "window", TIMELINE_WINDOW, least_window)
        hop = _seconds(request, "hop", None, MIN_HOP)
        data, name = await audio(request)
        cancelled = threading.Event()

        def work():
            if cancelled.is_set():  # its client left while it waited for the timeline thread
                raise Cancelled()
            batcher.timelines += 1
            signal, warnings = decode(data, name, max_timeline, too_long_timeline)
            windows = len(signal) / SAMPLE_RATE / (hop or window / HOPS_PER_WINDOW)
            if windows > MAX_WINDOWS:
                raise RequestProblem(400, f"about {windows:.0f} windows, more than the {MAX_WINDOWS} a timeline "
                                          "gives at most: choose a longer hop")
            try:
                table = detector.signal_timeline(signal, name, window=window, hop=hop,
                                                 forward=lambda inputs: batcher.forward(inputs, cancelled))
            except AudioError as error:
                raise _warned(error, warnings) from None
            return _json({"name": name, "duration": round(len(signal) / SAMPLE_RATE, 4), "window": window,
                          "hop": hop if hop is not None else window / HOPS_PER_WINDOW, "warnings": warnings,
                          "windows": table.to_dict(orient="records")})

        future = asyncio.get_running_loop().run_in_executor(timelines, work)
        return await while_connected(request, future, cancelled)

    async def health(request):
        return _json({"status": "ok", **card, "batches": batcher.batches, "scored": batcher.scored,
                      "window_batches": batcher.window_batches, "timelines": batcher.timelines})

    async def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()
        for executor in (pool, timelines):
            executor.shutdown(wait=False, cancel_futures=True)

    async def refused(request, problem):
        return _error(problem.status, problem.reason)

    async def bad_audio(request, error):  # the reason, and the file's warnings where it has some (as the CLI prints)
        warnings = getattr(error, "warnings", None)
        return _json({"error": error.reason, **({"warnings": warnings} if warnings else {})}, 422)

    async def gone(request, error):
        from starlette.responses import Response

        return Response(status_code=499)  # nginx's "client closed request": the client left, nothing is sent

    async def not_served(request, error):  # 404, 405: the JSON shape of every other answer
        return _error(error.status_code, f"{error.detail}: {request.method} {request.url.path}; the API is "
                                         "POST /v1/predict, POST /v1/timeline, GET /v1/health")

    async def bug(request, error):  # a fixed line and an id to the client; details to stderr and the log
        return _error(500, report_bug(request, error, log))

    app = Starlette(routes=[
        Route("/", index), Route("/v1/health", health), Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/timeline", timeline, methods=["POST"]), Mount("/static", StaticFiles(directory=STATIC)),
    ], lifespan=lifespan, exception_handlers={RequestProblem: refused, AudioError: bad_audio, Cancelled: gone,
                                              ClientDisconnect: gone, HTTPException: not_served, Exception: bug})
    app.state.batcher = batcher
    return Guard(app, limits.api_key, log)


def _warned(error, warnings):
    """`error` carrying the upload's warnings to its 422."""
    error.warnings = warnings
    return error


def _summary(row):
    """A `Detector.score` row as the API's fields: predicted (classifiers), probabilities, decisions."""
    summary = {"probabilities": {k[2:]: v for k, v in row.items() if k.startswith("p_")}}
    summary["decisions"] = {k: v for k, v in row.items() if isinstance(v, bool)}
    if "predicted" in row:
        summary = {"predicted": row["predicted"], **summary}
    return summary
