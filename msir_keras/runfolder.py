"""Run folders: written whole or not at all, resumed fold by fold, never overwritten unasked.

A run is written into `<out>.partial` (`staging_folder`) and moved to
`<out>` when it has finished (`move_into_place`), so a crash never leaves a
half-written run where a finished one was. Started again with the same
configuration, a run resumes from its `.partial` folder: a fold whose
`metrics.json` was written (`finished_fold`) is not trained again. Every
JSON file is written atomically, with NaN and infinity as null
(`write_json`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

from msir_keras.config import ExperimentConfig
from msir_keras.features.base import ConfigError
from msir_keras.features.store import atomic_write
from msir_keras.reports import results_table


def finished_fold(config, folder):
    """The saved report of a fold that a previous attempt finished, or None."""
    path = os.path.join(folder, "metrics.json")
    if not os.path.exists(path) or (config.model in ("msir", "fusion") and not os.path.exists(
            os.path.join(folder, "model.keras"))):
        return None
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError:  # killed while writing it: the fold is trained again
        return None


def write_json(path, value):
    """Writes valid JSON, whole or not at all: NaN and infinity (undefined figures) become null."""
    text = json.dumps(_finite(value), indent=2, allow_nan=False).encode()
    atomic_write(path, lambda stream: stream.write(text))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RunFolderError(ConfigError):
    """A run folder that would be overwritten, or a partial run of another configuration."""


def staging_folder(out):
    return os.path.normpath(out) + ".partial"


def check_run_folder(config, out, overwrite=False):
    """Refuses, before any work, to write over a finished run or a foreign partial one."""
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise RunFolderError(
            f"{out} already holds a run; pass --overwrite to replace it (the old one is kept until "
            "the new one has finished) or choose another --out"
        )
    staging = staging_folder(out)
    saved = os.path.join(staging, "config.json")
    if os.path.exists(saved) and not overwrite:
        if ExperimentConfig.load(saved).to_dict() != ExperimentConfig.from_dict(config.to_dict()).to_dict():
            raise RunFolderError(
                f"{staging} holds an unfinished run with another configuration; pass --overwrite "
                "to discard it, or delete it"
            )


def move_into_place(staging, out):
    """Replaces `out` by the finished `staging` folder; an old run goes only once the new one is there."""
    old = None
    if os.path.exists(out):
        old = f"{os.path.normpath(out)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def write_results(out, metrics, log=print):
    """Writes metrics.json and results.md (the table, also logged) into `out`."""
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "metrics.json"), metrics)
    text = results_table(metrics)
    with open(os.path.join(out, "results.md"), "w") as handle:
        handle.write(text + "\n")
    log(text)
    return metrics
