"""`msir serve`: a detector as an HTTP service (Starlette on uvicorn) with a web page.

`serve` loads a run's or an export's detector once and serves
`POST /v1/predict` (one recording -> probabilities), `POST /v1/timeline`
(a long recording -> per-window probabilities), `GET /v1/health` and the
page at `/`. Importing this package imports neither Starlette, uvicorn nor
Keras: `app` and `server` do, when a server starts.
"""

from msir_keras.service.limits import (API_KEY_VARIABLE, LOOPBACK, MAX_MB, MAX_SECONDS, MAX_TIMELINE_MINUTES,
                                       Limits)


def serve(*args, **kwargs):
    """`msir_keras.service.server.serve`: see there."""
    from msir_keras.service.server import serve as run

    return run(*args, **kwargs)


def create_app(*args, **kwargs):
    """`msir_keras.service.app.create_app`: see there."""
    from msir_keras.service.app import create_app as make

    return make(*args, **kwargs)


__all__ = ["API_KEY_VARIABLE", "LOOPBACK", "MAX_MB", "MAX_SECONDS", "MAX_TIMELINE_MINUTES", "Limits", "create_app",
           "serve"]
