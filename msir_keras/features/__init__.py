"""Feature extractors (log-Mels, openSMILE LLDs and functionals, self-supervised upstreams) and their cache."""

from msir_keras.features.base import ConfigError, Extractor, FeatureConfig
from msir_keras.presets import BRANCH_INPUT, VECTOR_INPUTS
from msir_keras.features.lld import LLD, Functionals, FunctionalsConfig, LLDConfig
from msir_keras.features.logmel import LogMel, LogMelConfig
from msir_keras.features.schedule import DiskSpaceError, ExtractionSummary, parse_shard
from msir_keras.features.store import DamagedEntryError, FeatureStore, MissingFeaturesError
from msir_keras.features.checkpoints import DEFAULT_CHECKPOINT, FAMILIES, CheckpointError, Family
from msir_keras.features.random_checkpoints import save_random_checkpoint
from msir_keras.features.upstream import ALL_LAYERS, DEFAULT_BATCH_SIZE, Upstream, UpstreamConfig
from msir_keras.features.wav2vec import Wav2Vec2, Wav2Vec2Config
from msir_keras.features.extractors import EXTRACTORS, extractor_from_config



def branch_extractors(logmel=None, lld=None, wav2vec2=None):
    """The extractors of MSIR's three inputs, by input name; a None input is off.

    Args:
        logmel: dict or LogMelConfig or None. Defaults to the paper's 2D log-Mels.
        lld: dict or LLDConfig or None. Defaults to the paper's 3D-LLD.
        wav2vec2: str (hub id or folder of any upstream family), dict,
            Wav2Vec2Config, an `Upstream` (used as given), or None to leave
            the third branch out.
    """
    extractors = {"logmel": LogMel(logmel), "lld": LLD(lld)}
    if isinstance(wav2vec2, Upstream):
        extractors["w2v"] = wav2vec2
    elif wav2vec2 is not None:
        if isinstance(wav2vec2, str):
            wav2vec2 = {"source": wav2vec2}
        extractors["w2v"] = Wav2Vec2(wav2vec2)
    return extractors


BASELINE_FEATURES = {
    "compare": {"feature_set": "ComParE_2016"},
    "egemaps": {"feature_set": "eGeMAPSv02"},
}


def baseline_extractor(name):
    """The functionals extractor of an SVM baseline: "compare" or "egemaps"."""
    if name not in BASELINE_FEATURES:
        raise ConfigError(f"unknown baseline features {name!r}; choose from {sorted(BASELINE_FEATURES)}")
    return Functionals(BASELINE_FEATURES[name])


# The model's sequence inputs (MSIR's branches without the functionals), and every feature
# `msir extract --features` can compute: those, then the baselines' functionals.
INPUTS = tuple(name for name in BRANCH_INPUT.values() if name not in VECTOR_INPUTS)
FEATURES = (*INPUTS, *BASELINE_FEATURES)


def named_extractors(names, logmel=None, lld=None, wav2vec2=None):
    """The extractors of `names` (of `FEATURES`), in that order: `msir extract --features`.

    Args:
        names: list of str. Model inputs ("logmel", "lld", "w2v") or SVM
            baselines' functionals ("compare", "egemaps").
        logmel, lld, wav2vec2: the inputs' settings, as `branch_extractors`
            takes them; "w2v" needs `wav2vec2`.

    Raises:
        ConfigError: an unknown name, or "w2v" without a checkpoint.
    """
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise ConfigError(f"--features: unknown {unknown}; choose from {','.join(FEATURES)}")
    if "w2v" in names and wav2vec2 is None:
        raise ConfigError("w2v features need a wav2vec 2.0 checkpoint (a hub id or a folder)")
    branch = branch_extractors(logmel, lld, wav2vec2 if "w2v" in names else None)
    return [branch[name] if name in branch else baseline_extractor(name) for name in names]
