"""What `msir serve` accepts and how it works: its defaults, in one light module (the CLI's help shows them)."""

from __future__ import annotations

import dataclasses
import os

MAX_MB = 25.0  # default upload limit: about 13 minutes of 16-bit 16 kHz mono wav
MAX_SECONDS = 60.0  # default longest recording /v1/predict takes; longer ones go to /v1/timeline
MAX_TIMELINE_MINUTES = 15.0  # default longest recording /v1/timeline takes: about the 25 MB of 16 kHz 16-bit wav
API_KEY_VARIABLE = "MSIR_API_KEY"  # where the API key is read from when --api-key is not given
LOOPBACK = "127.0.0.1"  # the default host: this machine only


@dataclasses.dataclass
class Limits:
    """What `msir serve` accepts and how it works.

    Attributes:
        max_mb: float, defaults to `MAX_MB` (25). Largest body in MB (2**20 bytes); 413 over it.
        max_seconds: float, defaults to `MAX_SECONDS` (60). Longest recording
            `/v1/predict` takes, in seconds; 413 (naming `/v1/timeline`) over it.
        api_key: str or None. When set, every endpoint but health (and the
            page's static files) requires it, as `Authorization: Bearer KEY`
            or `X-API-Key: KEY`.
        max_timeline_minutes: float, defaults to `MAX_TIMELINE_MINUTES` (15).
            Longest recording `/v1/timeline` takes, in minutes; 413 over it.
        workers: int or None. Threads that decode and extract /v1/predict's
            uploads; None: one per core this process may run on. Timelines
            have one thread of their own.
        batch_size: int, defaults to 16. Inputs per forward pass.
        max_wait: float, defaults to 1.0. Seconds a batch waits at most for requests being extracted.
        log_dir: str or None. Where to append `requests.jsonl` (one line per
            request: time, method, path, status, seconds); None writes nothing.
    """

    max_mb: float = MAX_MB
    max_seconds: float = MAX_SECONDS
    max_timeline_minutes: float = MAX_TIMELINE_MINUTES
    api_key: str | None = None
    workers: int | None = None
    batch_size: int = 16
    max_wait: float = 1.0
    log_dir: str | None = None

    def check(self):
        """Raises ValueError for an empty API key: `--api-key "$KEY"` with KEY unset must not serve without one."""
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"the API key is empty (--api-key \"\" or an empty {API_KEY_VARIABLE}); give a "
                             f"non-empty key, or leave out --api-key and unset {API_KEY_VARIABLE} to serve without one")


def default_threads():
    """The cores this process may run on (its CPU affinity, where the system says), else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
