"""2D/3D log-Mel filterbank features, as ACRNN and MSIR's CR branch take them."""

from __future__ import annotations

import dataclasses

import numpy as np
import python_speech_features as psf

from msir_keras.audio import SAMPLE_RATE
from msir_keras.features.base import ConfigError, Extractor, FeatureConfig, check_signal


WINDOWS = {"hamming": np.hamming, "rectangular": lambda n: np.ones((n,))}


@dataclasses.dataclass(frozen=True)
class LogMelConfig(FeatureConfig):
    """Settings of `python_speech_features.logfbank` and its deltas.

    Args:
        n_filters: int, defaults to 40. Mel filters (W in the paper).
        win_length: float, defaults to 0.025. Window in seconds (Hamming).
        hop_length: float, defaults to 0.01. Hop in seconds.
        nfft: int, defaults to 512.
        window: str, defaults to "hamming" (the paper's). "rectangular" is
            `python_speech_features.logfbank`'s own default.
        preemphasis: float, defaults to 0.97 (the library's default).
        deltas: int, defaults to 1. 1 gives (T, 40, 2), the paper's 2D
            log-Mels; 2 adds the second-order delta, (T, 40, 3), ACRNN's 3D.
        delta_width: int, defaults to 2. N of `python_speech_features.delta`.
    """

    n_filters: int = 40
    win_length: float = 0.025
    hop_length: float = 0.01
    nfft: int = 512
    window: str = "hamming"
    preemphasis: float = 0.97
    deltas: int = 1
    delta_width: int = 2

    def __post_init__(self):
        if self.deltas not in (0, 1, 2):
            raise ConfigError(f"LogMelConfig.deltas must be 0, 1 or 2, got {self.deltas}")
        if self.window not in WINDOWS:
            raise ConfigError(f"LogMelConfig.window must be one of {sorted(WINDOWS)}")


class LogMel(Extractor):
    """Log-Mel filterbank energies with deltas, shaped (T, n_filters, 1 + deltas).

    Example:
    >>> import numpy as np
    >>> LogMel()(np.random.default_rng(0).uniform(-.1, .1, 16000).astype("float32")).shape
    (99, 40, 2)
    """

    name = "logmel"
    config_class = LogMelConfig

    @property
    def frame_step(self):
        return self.config.hop_length

    def __call__(self, signal):
        signal = check_signal(signal)
        config = self.config
        # `logfbank` of python_speech_features 0.6 takes no window, so take
        # the log of `fbank` (which floors zero energies at machine epsilon).
        energies, _ = psf.fbank(
            signal,
            samplerate=SAMPLE_RATE,
            winlen=config.win_length,
            winstep=config.hop_length,
            nfilt=config.n_filters,
            nfft=config.nfft,
            preemph=config.preemphasis,
            winfunc=WINDOWS[config.window],
        )
        planes = [np.log(energies)]
        for _ in range(config.deltas):
            planes.append(psf.delta(planes[-1], config.delta_width))
        return np.stack(planes, axis=-1).astype(np.float32)
