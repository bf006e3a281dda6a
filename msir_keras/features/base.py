"""What every feature extractor shares: a JSON config, a cache key, batching."""

from __future__ import annotations

import dataclasses
import hashlib
import json


class ConfigError(ValueError):
    """A configuration that does not fit: unknown keys, or a mismatch with a model."""


def check_signal(signal):
    """Refuses what `read_audio` never gives: integer samples, or floats on the int16 scale.

    Every extractor takes float mono samples in [-1, 1] at 16 kHz. int16
    samples overflow inside openSMILE, and log-Mels of samples x 32768 shift
    by 2 ln(32768) = 20.8 without a word, so both are refused.

    Raises:
        ValueError: naming the problem and `msir_keras.audio.read_audio`.
    """
    import numpy as np

    signal = np.asarray(signal)
    fix = "read files with msir_keras.audio.read_audio (float32 in [-1, 1], mono, 16 kHz)"
    if signal.ndim != 1:
        raise ValueError(f"a signal is a 1-D array of samples, got shape {signal.shape}; {fix}")
    if not np.issubdtype(signal.dtype, np.floating):
        raise ValueError(f"{signal.dtype} samples: the extractors take floats; {fix}, or divide int16 "
                         "samples by 32768")
    if not np.all(np.isfinite(signal)):
        raise ValueError(f"the samples hold NaN or infinity; {fix}")
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak > 8.0:
        raise ValueError(f"samples reach {peak:.4g}, far outside [-1, 1] (floats still on the int16 scale?); "
                         f"{fix}, or divide by 32768")
    return signal


def signal_problem(signal):
    """Why `check_signal` refuses a file's decoded samples (far outside [-1, 1] ...), in one line for the file, or None."""
    try:
        check_signal(signal)
    except ValueError as error:
        return f"{str(error).split('; ')[0]}; rescale the file's samples to [-1, 1]"
    return None


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Base for the extractors' configs: plain data that round-trips to JSON."""

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no setting(s) {unknown}; known settings: {sorted(known)}"
            )
        values = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in values.items()
        }
        return cls(**values)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


class Extractor:
    """A feature extractor: float32 mono 16 kHz signal -> (T, ...) float32 array.

    Subclasses set `name` and `config_class`, and implement `__call__`.
    `identity()` is everything that determines the output: the store keys
    cached features by it, so any changed setting means a new cache entry.
    """

    name = None
    config_class = FeatureConfig
    # Seconds between frames when frame i depends only on the signal around
    # i * frame_step, so a long file's features can be computed once and
    # sliced into windows; None where they cannot (utterance-level functionals,
    # wav2vec 2.0's attention over the whole input).
    frame_step = None
    # Cheap to rebuild in another process from its config, and CPU-bound:
    # `FeatureStore.extract(workers=N)` runs it in worker processes.
    parallel = True
    # What the store keeps the arrays as: float16 halves the disk of the upstreams' every-layer features.
    store_dtype = "float32"

    def __init__(self, config=None, **overrides):
        if config is None:
            config = self.config_class()
        elif isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

    def get_config(self):
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config):
        return cls(cls.config_class.from_dict(config))

    def identity(self):
        """A JSON-able description of everything that determines the output."""
        return {"extractor": self.name, "config": self.get_config()}

    def bytes_per_second(self):
        """Store bytes per second of audio, where large enough to check the disk first; None: not checked."""
        return None

    def key(self):
        """A short stable name for the store: `<name>-<hash of identity>`."""
        text = json.dumps(self.identity(), sort_keys=True)
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def __call__(self, signal):
        raise NotImplementedError

    def extract_many(self, signals):
        """Extracts a list of signals; batched where the extractor can batch."""
        return [self(signal) for signal in signals]

    def __repr__(self):
        return f"{type(self).__name__}({self.config})"


def nonfinite_problem(array):
    """Why a feature array cannot be used (NaN or infinite values), or None."""
    import numpy as np

    finite = np.isfinite(array)
    if finite.all():
        return None
    rows = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1)) if array.ndim else []
    return (f"features hold NaN or infinity ({int((~finite).sum())} of {array.size} values, "
            f"{len(rows)} of {len(array)} frames)" if array.ndim else "features hold NaN or infinity")
