"""The middleware of `msir serve`: the API key, the request log, and the error id of a 500."""

from __future__ import annotations

import hmac
import json
import os
import sys
import threading
import time
import traceback
import uuid

PUBLIC = ("/v1/health", "/", "/favicon.ico")  # and /static/...: the page's files hold no data


def given_key(headers):
    """The key a request sends: `X-API-Key: KEY`, or `Authorization: Bearer KEY` (the scheme in any case)."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None  # a bare `Authorization: KEY` is refused


class RequestLog:
    """Appends one JSON line per request to `log_dir/requests.jsonl` (None: writes nothing)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.lock = threading.Lock()

    def __call__(self, entry):
        if self.log_dir is None:
            return
        with self.lock, open(os.path.join(self.log_dir, "requests.jsonl"), "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def report_bug(request, error, log):
    """A 500's one line for the client (an id, no details) and the details for stderr and the log.

    Args:
        request: starlette.requests.Request.
        error: the exception.
        log: `RequestLog`.

    Returns:
        The line the client gets.
    """
    error_id = uuid.uuid4().hex[:12]
    request.scope.setdefault("state", {})["error_id"] = error_id
    detail = f"{type(error).__name__}: {error}"
    print(f"msir serve: error {error_id} on {request.method} {request.url.path}: {detail}\n"
          + "".join(traceback.format_exception(error)), file=sys.stderr, flush=True)
    log({"time": time.time(), "error_id": error_id, "path": request.url.path, "error": detail,
         "traceback": "".join(traceback.format_exception(error))})
    return f"internal error {error_id}: a bug in msir-keras; the server's log has the details under this id"


def error_response(status, reason):
    """The JSON answer of every refusal and failure: `{"error": reason}` with `status`."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": reason}, status_code=status)


class Guard:
    """ASGI middleware: the API key (compared in constant time) and the request log."""

    def __init__(self, app, api_key, log):
        self.app = app
        self.state = app.state
        self.api_key = api_key.encode() if api_key is not None else None
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request

        path, started, status = scope["path"], time.perf_counter(), {}
        public = (path.rstrip("/") or "/") in PUBLIC or path.startswith("/static/")

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and not public:
                given = given_key(Request(scope).headers)
                if given is None or not hmac.compare_digest(given.encode(), self.api_key):
                    response = error_response(401, "a missing or wrong API key: send it as `Authorization: Bearer KEY` "
                                           "or `X-API-Key: KEY`")
                    return await response(scope, receive, sending)
            await self.app(scope, receive, sending)
        finally:
            if path.startswith("/v1/"):
                entry = {"time": time.time(), "method": scope.get("method"), "path": path,
                         "status": status.get("code"), "seconds": round(time.perf_counter() - started, 4)}
                if "error_id" in scope.get("state", {}):
                    entry["error_id"] = scope["state"]["error_id"]
                self.log(entry)
