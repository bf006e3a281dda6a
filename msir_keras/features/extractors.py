"""Every extractor class by its name, and rebuilding one from a saved config (the store's, a model's)."""

from __future__ import annotations

from msir_keras.features.base import ConfigError
from msir_keras.features.lld import LLD, Functionals
from msir_keras.features.logmel import LogMel
from msir_keras.features.upstream import Upstream
from msir_keras.features.wav2vec import Wav2Vec2

EXTRACTORS = {cls.name: cls for cls in (LogMel, LLD, Functionals, Wav2Vec2, Upstream)}


def extractor_from_config(name, config):
    """Rebuilds an extractor from its name and `get_config()` dict.

    Raises:
        ConfigError: `name` is not an extractor's.
    """
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {name!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name].from_config(config)
