"""openSMILE ComParE_2016 low-level descriptors with deltas (the LLD branch's input)."""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import importlib.util
import os
import platform
import sys

import numpy as np
import python_speech_features as psf

from msir_keras.audio import SAMPLE_RATE
from msir_keras.features.base import ConfigError, Extractor, FeatureConfig, check_signal


@dataclasses.dataclass(frozen=True)
class LLDConfig(FeatureConfig):
    """Settings of the LLD extractor.

    Args:
        feature_set: str, defaults to "ComParE_2016". An `opensmile.FeatureSet`
            name whose LLD level the branch reads (65 LLDs for ComParE).
        deltas: int, defaults to 2. 0 gives the paper's 1D-LLD (T, 65),
            1 the 2D-LLD (T, 130), 2 the 3D-LLD (T, 195).
        delta_width: int, defaults to 2. Regression half-width for the
            second-order deltas, the same as openSMILE's own deltas use.
    """

    feature_set: str = "ComParE_2016"
    deltas: int = 2
    delta_width: int = 2

    def __post_init__(self):
        if self.deltas not in (0, 1, 2):
            raise ConfigError(f"LLDConfig.deltas must be 0, 1 or 2, got {self.deltas}")


def load_opensmile():
    """Imports `opensmile`, its native library bound to its own symbols first.

    Loaded into a process that already holds TensorFlow, libSMILEapi would
    resolve some of its symbols to TensorFlow's global ones and corrupt the
    heap ("malloc(): corrupted top size"). Opening it first with
    RTLD_DEEPBIND makes it prefer its own; openSMILE's own later load then
    reuses that handle.
    """
    if "opensmile" not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        spec = importlib.util.find_spec("opensmile")
        folders = os.path.join(os.path.dirname(spec.origin), "core", "bin", f"*{platform.machine()}")
        for library in glob.glob(os.path.join(folders, "libSMILEapi.so")):
            ctypes.CDLL(library, mode=os.RTLD_DEEPBIND | os.RTLD_NOW | os.RTLD_LOCAL)
    import opensmile

    return opensmile


def _smile(feature_set, level):
    opensmile = load_opensmile()

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel[level],
    )


class LLD(Extractor):
    """openSMILE LLDs, their deltas and second-order deltas, shaped (T, 65 * (1 + deltas)).

    openSMILE returns its deltas with two more frames than the LLDs, and the
    last time stamps repeat, so the two are aligned by position
    (`deltas[:len(lld)]`), never by a join on the time index. The
    second-order deltas are the delta regression of openSMILE's deltas.
    """

    name = "lld"
    config_class = LLDConfig
    frame_step = 0.01  # ComParE_2016's LLD frames: 10 ms apart

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._smiles = None

    def _levels(self):
        if self._smiles is None:
            levels = ["LowLevelDescriptors"]
            if self.config.deltas >= 1:
                levels.append("LowLevelDescriptors_Deltas")
            self._smiles = [_smile(self.config.feature_set, level) for level in levels]
        return self._smiles

    def __call__(self, signal):
        signal = check_signal(signal)
        smiles = self._levels()
        lld = smiles[0].process_signal(signal, SAMPLE_RATE).to_numpy(np.float32)
        parts = [lld]
        if self.config.deltas >= 1:
            deltas = smiles[1].process_signal(signal, SAMPLE_RATE).to_numpy(np.float32)
            parts.append(deltas[: len(lld)])
        if self.config.deltas >= 2:
            parts.append(psf.delta(parts[1], self.config.delta_width).astype(np.float32))
        return np.concatenate(parts, axis=1)


@dataclasses.dataclass(frozen=True)
class FunctionalsConfig(FeatureConfig):
    """Settings of utterance-level openSMILE functionals (the SVM baselines' input).

    Args:
        feature_set: str, defaults to "ComParE_2016" (6373 functionals);
            "eGeMAPSv02" gives 88.
    """

    feature_set: str = "ComParE_2016"


class Functionals(Extractor):
    """openSMILE functionals of a whole utterance, shaped (D,)."""

    name = "functionals"
    config_class = FunctionalsConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._smile = None

    def __call__(self, signal):
        signal = check_signal(signal)
        if self._smile is None:
            self._smile = _smile(self.config.feature_set, "Functionals")
        return self._smile.process_signal(signal, SAMPLE_RATE).to_numpy(np.float32)[0]
