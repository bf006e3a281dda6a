"""One audio reader for every step: any file soundfile reads -> float32 mono 16 kHz."""

from __future__ import annotations

import hashlib
import os
import struct
import warnings

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


class AudioWarning(UserWarning):
    """Audio that can be used but probably should not be: truncated, or digital silence."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def wav_shortfall(path):
    """Bytes a RIFF/WAVE file's data chunk declares but does not hold (0 when whole).

    libsndfile reads a truncated wav without complaint, up to where its data
    stops; only the header says that more was meant to be there. Not a wav
    (or a streamed wav whose header leaves the size open): 0.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk, length = struct.unpack("<4sI", handle.read(8))
            if chunk == b"data":
                if length in (0, 0xFFFFFFFF):
                    return 0
                return max(0, length - (size - offset - 8))
            offset += 8 + length + (length & 1)
    return 0


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

    Warns:
        AudioWarning: a wav whose header declares more data than the file
            holds (a truncated copy), or a file of digital silence.

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
    missing = wav_shortfall(path)
    if missing:
        warnings.warn(AudioWarning(
            path, f"truncated: the header declares {missing} more bytes of audio than the file "
            f"holds; only the first {signal.shape[0] / sample_rate:.2f} s are used (copy the file again)",
        ), stacklevel=2)
    if not np.any(signal):
        warnings.warn(AudioWarning(
            path, "digital silence: every sample is 0; check the recording or remove it from the corpus",
        ), stacklevel=2)
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
