"""Extraction scheduling: what to compute for which files, where, and what came of it.

`FeatureStore.extract` runs here. Files are read a chunk at a time, so that
batching extractors batch; the CPU extractors (openSMILE, log-Mels,
functionals) may run in worker processes beside the wav2vec 2.0 encoder in
this process; a file that fails is reported with its reason while the
others are still extracted; shards split one corpus among machines. The
cache itself (entries, checks, repairs) is `msir_keras.features.store`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings

import numpy as np
import soundfile

from msir_keras.audio import SAMPLE_RATE, AudioError, AudioWarning, read_audio
from msir_keras.features.base import ConfigError, nonfinite_problem


class DiskSpaceError(ConfigError):
    """Features that the store's disk cannot hold, refused before any is computed."""


@dataclasses.dataclass
class ExtractionSummary:
    """What one `FeatureStore.extract` run did."""

    computed: int = 0
    cached: int = 0
    failed: list = dataclasses.field(default_factory=list)  # (path, reason)
    skipped_other_shards: int = 0
    warnings: list = dataclasses.field(default_factory=list)  # (path, reason): used, but suspicious
    repaired: list = dataclasses.field(default_factory=list)  # (damaged entry, where it was moved, why)

    def to_dict(self):
        return {
            "computed": self.computed,
            "cached": self.cached,
            "failed": [{"path": path, "reason": reason} for path, reason in self.failed],
            "skipped_other_shards": self.skipped_other_shards,
            "warnings": [{"path": path, "reason": reason} for path, reason in self.warnings],
            "repaired": [{"entry": entry, "moved_to": moved, "problem": problem}
                         for entry, moved, problem in self.repaired],
        }

    def __str__(self):
        lines = [
            f"{self.computed} files extracted, {self.cached} already in the store, "
            f"{len(self.failed)} failed"
            + (f", {self.skipped_other_shards} left to other shards" if self.skipped_other_shards else "")
        ]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        lines += [f"  WARNING {path}: {reason}" for path, reason in self.warnings]
        lines += [f"  REPAIRED damaged entry {entry} ({problem}; moved to {moved}), computed again"
                  for entry, moved, problem in self.repaired]
        return "\n".join(lines)


def check_disk_space(store, paths, extractors):
    """Refuses, before any work, features of `paths` that would not fit on the store's disk.

    Only extractors that state their `bytes_per_second` (the upstreams: 3.6
    GB per hour of audio for every hidden state of a base model) are
    counted, for the files they have no entry of yet; durations come from
    the files' headers. A file that cannot be read counts nothing here: it
    fails later with its reason.

    Raises:
        DiskSpaceError: with what is needed, per hour of audio, and what is free.
    """
    rates = [(e, e.bytes_per_second()) for e in extractors]
    rates = [(e, rate) for e, rate in rates if rate]
    if not rates:
        return
    needed, seconds_missing = 0.0, 0.0
    for path in paths:
        try:
            digest = store.digest(path)
            seconds = soundfile.info(path).duration
        except Exception:
            continue
        missing = [rate for e, rate in rates if not os.path.exists(store.path(e, digest))]
        needed += seconds * sum(missing)
        seconds_missing += seconds if missing else 0.0
    folder = os.path.abspath(store.root)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if needed > free:
        per_hour = ", ".join(f"{e.name} {size_text(rate * 3600)}" for e, rate in rates)
        raise DiskSpaceError(
            f"the features of {_duration_text(seconds_missing)} of audio need {size_text(needed)} in {store.root} "
            f"({per_hour} per hour of audio), but its disk has {size_text(free)} free. Free space, give another "
            "--store, or choose one upstream layer instead of all."
        )


def _duration_text(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds:.0f} s"


def size_text(count):
    """Bytes in decimal units: 3594240000 -> '3.59 GB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} B"


def parse_shard(text):
    """'2/4' -> (2, 4): the second of four shards (1-based)."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n, e.g. 1/4, got {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: i must be between 1 and n")
    return index, count


def extract(store, paths, extractors, shard=None, progress=False, chunk_size=16, workers=0, verify=False):
    """Computes every missing feature of `paths` for every extractor into `store`.

    The arguments and the result are `FeatureStore.extract`'s, which calls this.
    """
    paths = sorted(set(map(str, paths)))
    summary = ExtractionSummary()
    if shard is not None:
        index, count = shard
        summary.skipped_other_shards = len(paths) - len(paths[index - 1 :: count])
        paths = paths[index - 1 :: count]
    check_disk_space(store, paths, extractors)
    if workers == "auto":
        workers = default_workers(extractors)
    pool = None
    if workers and any(e.parallel for e in extractors):
        import concurrent.futures
        import multiprocessing

        # spawn: a fork of a process holding TensorFlow or torch threads can deadlock.
        pool = concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="extract")
    try:
        for start in range(0, len(paths), chunk_size):
            _extract_chunk(store, paths[start : start + chunk_size], extractors, summary, pool, verify)
            if bar is not None:
                bar.update(len(paths[start : start + chunk_size]))
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return summary


def _extract_chunk(store, paths, extractors, summary, pool=None, verify=False):
    """Extracts one chunk of files: cached ones counted, the rest read and computed into `store`."""
    pending = {}  # path -> (digest, extractors still missing)
    for path in paths:
        try:
            digest = store.digest(path)
        except OSError as error:
            summary.failed.append((path, f"cannot read the file ({error.strerror})"))
            continue
        missing = [e for e in extractors if not store.has(e, digest, summary.repaired, verify)]
        if missing:
            pending[path] = (digest, missing)
        else:
            summary.cached += 1
            # What was suspicious about the audio when it was read is said again on every use.
            summary.warnings += [(path, reason) for reason in store.audio_warnings(digest)]
    signals = {}
    for path in list(pending):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioWarning)
            try:
                signals[path] = read_audio(path)
            except AudioError as error:
                summary.failed.append((path, error.reason))
                del pending[path]
        found = [w.message.reason for w in caught if isinstance(w.message, AudioWarning)]
        summary.warnings += [(path, reason) for reason in found]
        if path in pending:
            store.keep_audio_warnings(pending[path][0], found)
    failed = set()

    def keep(extractor, path, array, error=None):
        if error is None and array is not None and array.shape[0] == 0:
            error = "gave no frames"
        if error is None and array is not None:
            error = nonfinite_problem(np.asarray(array, dtype=np.float32))
            if error is not None:
                seconds = len(signals[path]) / SAMPLE_RATE
                error += (f" from {seconds * 1000:.0f} ms of audio"
                          + ("; the file is shorter than the extractor's analysis window, remove it"
                             " from the corpus" if seconds < 0.25 else "; check the recording"))
        if error is not None:
            failed.add(path)
            summary.failed.append((path, f"{extractor.name} failed: {error}"))
        elif path not in failed:
            store.save(extractor, pending[path][0], array)

    # The CPU extractors go to the workers first, then the rest (wav2vec 2.0) runs here meanwhile.
    remote = {}
    if pool is not None:
        for path, (_, missing) in pending.items():
            here = [e for e in missing if e.parallel]
            if here:
                specs = [(e.name, e.get_config()) for e in here]
                remote[path] = (here, pool.submit(_extract_in_worker, specs, signals[path]))
    for extractor in extractors:
        todo = [p for p in pending if extractor in pending[p][1] and p not in failed
                and not (p in remote and extractor in remote[p][0])]
        if todo:
            for path, array, error in _extract_isolated(extractor, todo, signals):
                keep(extractor, path, array, error)
    for path, (here, future) in remote.items():
        try:
            outputs = future.result()
        except Exception as error:  # the worker died (out of memory, a crash in a native library)
            outputs = [(None, f"worker process failed: {type(error).__name__}: {error}")] * len(here)
        for extractor, (array, error) in zip(here, outputs):
            keep(extractor, path, array, error)
    summary.computed += len(set(pending) - failed)


def _extract_isolated(extractor, paths, signals):
    """(path, array, error) of each path: batched, or file by file when the batch fails."""
    try:
        return [(p, a, None) for p, a in zip(paths, extractor.extract_many([signals[p] for p in paths]))]
    except Exception:
        results = []
        for path in paths:
            try:
                results.append((path, extractor(signals[path]), None))
            except Exception as error:
                results.append((path, None, f"{type(error).__name__}: {error}"))
        return results


def default_workers(extractors):
    """Worker processes that pay off: the cores left beside the encoder, or all cores without one.

    On one core, or with only CPU extractors on two, workers would only add
    their start-up time: 0.
    """
    cores = os.cpu_count() or 1
    if any(not e.parallel for e in extractors):
        return max(0, min(8, cores - 1))
    return min(8, cores) if cores > 2 else 0


_worker_extractors = {}


def _extract_in_worker(specs, signal):
    """In a worker process: [(array, None) or (None, error)] of each (name, config) extractor."""
    from msir_keras.features.extractors import extractor_from_config

    outputs = []
    for name, config in specs:
        key = (name, json.dumps(config, sort_keys=True))
        if key not in _worker_extractors:
            _worker_extractors[key] = extractor_from_config(name, config)
        try:
            outputs.append((_worker_extractors[key](signal), None))
        except Exception as error:
            outputs.append((None, f"{type(error).__name__}: {error}"))
    return outputs
