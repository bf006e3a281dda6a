"""One audio reader for every step: any file soundfile reads -> float32 mono 16 kHz; and the audio files of a folder."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _binary(source):
    """(handle, size in bytes) of a path, opened for reading, or of a seekable binary file, from its start."""
    if hasattr(source, "read"):
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
        yield source, size
        source.seek(0)
    else:
        with open(source, "rb") as handle:
            yield handle, os.path.getsize(source)


def wav_shortfall(path):
    """Bytes a RIFF/WAVE file's data chunk declares but does not hold (0 when whole).

    libsndfile reads a truncated wav without complaint, up to where its data
    stops; only the header says that more was meant to be there. Not a wav
    (or a streamed wav whose header leaves the size open): 0. `path` may be
    a seekable binary file (an upload held in memory).
    """
    with _binary(path) as (handle, size):
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


# Chunks that follow the data in wavs written by common recorders and editors.
_METADATA = {b"LIST", b"id3 ", b"ID3 ", b"JUNK", b"junk", b"PAD ", b"fact", b"cue ", b"smpl", b"inst", b"bext",
             b"iXML", b"_PMX", b"axml", b"acid", b"plst", b"DISP", b"afsp", b"umid", b"cart", b"regn"}


def _chunk_id(raw):
    return len(raw) == 4 and raw.isascii() and raw.decode("ascii").isprintable()


def wav_surplus(path):
    """Bytes of sound after a RIFF/WAVE file's data chunk that belong to no chunk (0 when none).

    The opposite of a truncated copy: a header written before the recording
    ended (or not updated after it) declares less audio than the file holds,
    and libsndfile reads only what it declares. Chunks after the data (LIST,
    id3 ..., even one cut short), a missing pad byte and zero padding are
    legal or harmless and are not counted. `path` may be a seekable binary file.
    """
    with _binary(path) as (handle, size):
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        offset, after_data = 12, None
        while offset + 8 <= size:
            handle.seek(offset)
            chunk, length = struct.unpack("<4sI", handle.read(8))
            if after_data is not None:
                fits = offset + 8 + length <= size
                if not (chunk in _METADATA or (_chunk_id(chunk) and fits)):
                    handle.seek(offset - 1)
                    if offset - 1 == after_data and handle.read(4) in _METADATA:
                        offset -= 1  # an odd-sized data chunk written without its pad byte
                        continue
                    break  # not a chunk: sound the header does not declare
                if not fits:
                    return 0  # a metadata chunk cut short: not sound
            if chunk == b"data":
                if length in (0, 0xFFFFFFFF):
                    return 0
                after_data = offset + 8 + length
            offset += 8 + length + (length & 1)
        if after_data is None or offset >= size:
            return 0
        handle.seek(offset)
        tail = handle.read()
    return len(tail) if len(tail) > 1 and any(tail) else 0


def read_audio(path, sample_rate=SAMPLE_RATE, name=None, warn=None):
    """Reads an audio file as float32 samples in [-1, 1], mono, at `sample_rate`.

    Stereo and multichannel files are downmixed by averaging the channels;
    other sample rates are resampled with `audresample` (the resampler that
    openSMILE's Python package uses).

    Args:
        path: str, path-like, or a seekable binary file (e.g. `io.BytesIO` of
            an upload: read in memory, nothing written to disk). Any format
            libsndfile reads (wav, flac, ogg...).
        sample_rate: int, defaults to 16000. The rate to return.
        name: str or None. What messages call a file object (default: its
            `name` attribute, else "<audio>"); a path is called by itself.
        warn: callable(AudioWarning) or None. Told of each warning below
            instead of Python's `warnings` module (whose capture is not
            thread-safe: a server reads in several threads at once).

    Returns:
        A 1D float32 numpy array.

    Raises:
        AudioError: the file is missing, unreadable, empty or shorter than one
            25 ms frame. The message names the file and the reason.

    Warns:
        AudioWarning: a wav whose header declares more data than the file
            holds (a truncated copy) or less (a header not updated when the
            recording ended), or a file of digital silence.

    Example:
    >>> signal = read_audio("../shared/data/emodb/wav/03a01Fa.wav")
    >>> signal.dtype, signal.ndim
    (dtype('float32'), 1)
    """
    source = path
    if hasattr(source, "read"):
        path = name or getattr(source, "name", None) or "<audio>"
        source.seek(0)
    elif not os.path.exists(path):
        raise AudioError(path, "no such file; check the corpus root or the manifest path")

    def _warn(reason):
        warning = AudioWarning(path, reason)
        if warn is None:
            warnings.warn(warning, stacklevel=3)
        else:
            warn(warning)

    try:
        signal, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises a bare RuntimeError/LibsndfileError
        message = str(error).replace(repr(source), repr(path)) if source is not path else str(error)
        raise AudioError(
            path, f"unreadable audio ({message}); re-encode it as PCM wav or flac"
        ) from None
    if signal.shape[0] == 0:
        signal, rate = _unsized_wav(source)  # a header whose data size was never written
        if signal is None:
            raise AudioError(path, "the file holds no samples; remove it from the corpus")
        _warn(f"the header's data size is 0 but {signal.shape[0] / rate:.2f} s of samples follow it (the "
              "recorder never finalised the header); they are read as the format chunk describes them")
    channels = signal
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
    missing = wav_shortfall(source)
    if missing:
        _warn(f"truncated: the header declares {missing} more bytes of audio than the file "
              f"holds; only the first {signal.shape[0] / sample_rate:.2f} s are used (copy the file again)")
    surplus = wav_surplus(source)
    if surplus:
        _warn(f"the header declares less audio than the file holds: {surplus} bytes after the declared "
              f"{signal.shape[0] / sample_rate:.2f} s are not read (its header was not updated when the recording "
              "ended; rewrite it with `sox --ignore-length in.wav out.wav` to use them)")
    level = float(np.sqrt(np.mean(np.square(channels, dtype=np.float64))))
    if channels.shape[1] > 1 and level > 0 and np.sqrt(np.mean(np.square(signal, dtype=np.float64))) < 0.01 * level:
        _warn(f"its {channels.shape[1]} channels cancel out when averaged to mono (one is the other "
              "inverted): the mono signal is near silence; keep one channel, e.g. `sox in.wav out.wav remix 1`")
    elif not np.any(signal):
        _warn("digital silence: every sample is 0; check the recording or remove it from the corpus")
    elif np.ptp(signal) == 0:
        _warn(f"a constant signal (every sample {signal[0]:.4g}, a DC offset without sound); check the "
              "recording or remove it from the corpus")
    return signal


_RAW = {(1, 8): ("u1", 128.0, 128.0), (1, 16): ("<i2", 0.0, 32768.0), (1, 32): ("<i4", 0.0, 2147483648.0),
        (3, 32): ("<f4", 0.0, 1.0), (3, 64): ("<f8", 0.0, 1.0)}


def _unsized_wav(path):
    """(samples (N, C) float32, rate) of a PCM or float wav whose data-size field is 0, or (None, None).

    libsndfile trusts the header's size and reads nothing; the bytes after
    the data chunk's header are read here as its `fmt ` chunk describes them.
    """
    with _binary(path) as (handle, _):
        data = handle.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None, None
    offset, form = 12, None
    while offset + 8 <= len(data):
        chunk, length = struct.unpack("<4sI", data[offset:offset + 8])
        if chunk == b"fmt " and length >= 16:
            code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[offset + 8:offset + 24])
            if code == 0xFFFE and length >= 40:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's code
                code = struct.unpack("<H", data[offset + 32:offset + 34])[0]
            form = (code, channels, rate, bits)
        if chunk == b"data":
            if length != 0 or form is None or (form[0], form[3]) not in _RAW:
                return None, None
            dtype, zero, scale = _RAW[(form[0], form[3])]
            body = data[offset + 8:]
            frame = np.dtype(dtype).itemsize * form[1]
            samples = np.frombuffer(body[: len(body) - len(body) % frame], dtype=dtype).reshape(-1, form[1])
            if not len(samples):
                return None, None
            return ((samples.astype(np.float64) - zero) / scale).astype(np.float32), form[2]
        offset += 8 + length + (length & 1)
    return None, None


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


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".mp3")


def _readable_audio(path):
    """Whether libsndfile can open the file (any format it knows, whatever the suffix)."""
    try:
        soundfile.info(path)
        return True
    except Exception:
        return False


def audio_files(arguments, warn=None):
    """Files to predict: each argument a file, or a folder searched (recursively) for audio.

    In a folder, files with a known audio suffix are taken, and any other
    file libsndfile can open (.opus, .caf, .w64 ...); `warn` (callable(str))
    is told how many files were left out, and which.
    """
    files = []
    for argument in arguments:
        if os.path.isdir(argument):
            found, skipped = [], []
            for folder, _, names in os.walk(argument):
                for name in names:
                    path = os.path.join(folder, name)
                    if name.lower().endswith(AUDIO_SUFFIXES) or (
                            not name.startswith(".") and os.path.isfile(path) and _readable_audio(path)):
                        found.append(path)
                    elif not name.startswith("."):  # hidden files (.DS_Store ...) are not mentioned
                        skipped.append(path)
            if not found:
                raise FileNotFoundError(f"{argument}: a folder with no audio file that libsndfile can read "
                                        f"({', '.join(AUDIO_SUFFIXES)}, ...)")
            if skipped and warn is not None:
                warn(f"{argument}: {len(skipped)} file(s) left out, not audio that libsndfile can read: "
                     + ", ".join(os.path.relpath(p, argument) for p in sorted(skipped)[:5])
                     + (" ..." if len(skipped) > 5 else ""))
            files += sorted(found)
        else:
            files.append(argument)
    return files
