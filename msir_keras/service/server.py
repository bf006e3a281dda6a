"""Running the app: load the detector once, warm it up, bind, print the URL, serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys

import numpy as np

from msir_keras.service.limits import API_KEY_VARIABLE, LOOPBACK


def is_loopback(host):
    """Whether `host` (a name or an address) binds to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: resolved by the system, maybe to any interface


def warm_up(detector):
    """One prediction of a synthetic second of audio: traces the model and loads openSMILE before the first client."""
    t = np.arange(16000) / 16000
    audio = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(16000)
    features, _ = detector.extract([audio.astype(np.float32)])[0]
    if features is not None:
        detector.score([features])


def _socket(host, port):
    """A listening TCP socket on (host, port); port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model, host=LOOPBACK, port=8000, limits=None, fold=None, threshold=0.5, wav2vec2=None, warn=None):
    """Serves a detector over HTTP until SIGTERM or SIGINT; returns 0 after a graceful shutdown.

    Args:
        model: str. A run folder, an export, or one fold's folder.
        host: str, defaults to 127.0.0.1 (this machine only).
        port: int, defaults to 8000; 0 takes a free port (the printed URL says which).
        limits: `msir_keras.service.app.Limits` or None (the defaults). Its
            `api_key` None takes the `MSIR_API_KEY` environment variable.
        fold, threshold, wav2vec2: as `Detector`.
        warn: callable(str) or None. Told of a non-loopback host without an API key.

    Raises:
        ValueError: an empty API key, the address cannot be bound, or `log_dir` is not a folder that can be made.
    """
    import uvicorn

    from msir_keras.detector import Detector
    from msir_keras.service.app import create_app
    from msir_keras.service.limits import Limits

    limits = limits or Limits()
    if limits.api_key is None:
        limits.api_key = os.environ.get(API_KEY_VARIABLE)  # set but empty: refused below, as `--api-key ""`
    limits.check()
    if not is_loopback(host) and limits.api_key is None and warn is not None:
        warn(f"serving on {host}, beyond this machine, without an API key: anyone who reaches it can use the "
             f"model; give --api-key KEY (or set {API_KEY_VARIABLE})")
    if limits.log_dir is not None:
        os.makedirs(limits.log_dir, exist_ok=True)
    sock = _socket(host, port)  # before the model loads: a taken port fails at once
    try:
        detector = Detector(model, fold=fold, threshold=threshold, wav2vec2=wav2vec2)
        warm_up(detector)
        app = create_app(detector, model, limits)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"msir serve: {model} on http://{shown}:{bound[1]}/ (API at /v1/predict, /v1/timeline, "
          f"/v1/health{'; API key required' if limits.api_key else ''}); Ctrl-C or SIGTERM stops it",
          flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again for the handler it
    # found; these make that a clean exit (status 0) rather than a kill or a KeyboardInterrupt.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    print("msir serve: stopped", file=sys.stderr, flush=True)
    return 0
