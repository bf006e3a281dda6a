"""One audio reader for every step: any file soundfile reads -> float32 mono 16 kHz."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import soundfile

SAMPLE_RATE = 16000
# The shortest signal every extractor can frame: one 25 ms analysis window.
MIN_SAMPLES = int(0.025 * SAMPLE_RATE)


class AudioError(ValueError):
    """An audio file that cannot be used, with the file and the reason."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_audio(path, sample_rate=SAMPLE_RATE):
    """Reads an audio file as float32 samples in [-1, 1], mono, at `sample_rate`.

    Stereo and multichannel files are downmixed by averaging the channels;
    other sample rates are resampled with `audresample` (the resampler that
    openSMILE's Python package uses).

    Args:
        path: str or path-like. Any format libsndfile reads (wav, flac, ogg...).
        sample_rate: int, defaults to 16000. The rate to return.

    Returns:
        A 1D float32 numpy array.

    Raises:
        AudioError: the file is missing, unreadable, empty or shorter than one
            25 ms frame. The message names the file and the reason.

    Example:
    >>> signal = read_audio("../shared/data/emodb/wav/03a01Fa.wav")
    >>> signal.dtype, signal.ndim
    (dtype('float32'), 1)
    """
    if not os.path.exists(path):
        raise AudioError(path, "no such file; check the corpus root or the manifest path")
    try:
        signal, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises a bare RuntimeError/LibsndfileError
        raise AudioError(
            path, f"unreadable audio ({error}); re-encode it as PCM wav or flac"
        ) from None
    if signal.shape[0] == 0:
        raise AudioError(path, "the file holds no samples; remove it from the corpus")
    signal = signal.mean(axis=1) if signal.shape[1] > 1 else signal[:, 0]
    if rate != sample_rate:
        import audresample

        signal = audresample.resample(signal, rate, sample_rate)[0]
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    min_samples = int(0.025 * sample_rate)
    if signal.shape[0] < min_samples:
        raise AudioError(
            path,
            f"too short: {signal.shape[0] / sample_rate * 1000:.1f} ms, shorter than one "
            "25 ms frame; remove it from the corpus",
        )
    if not np.all(np.isfinite(signal)):
        raise AudioError(path, "the samples hold NaN or infinity; re-encode the file")
    return signal


def file_digest(path, chunk_size=1 << 20):
    """The BLAKE2b digest of a file's bytes: its identity in the feature store.

    Content, not path, so a moved or renamed corpus keeps its cache, and an
    edited file gets new features.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
