"""The wav2vec 2.0 extractor of old configs and trained models: an `Upstream` under its first name.

Runs, configs and store entries made before other upstreams name the
extractor "wav2vec2" with settings `source`, `layer` and `normalize` (True
by default). `Wav2Vec2` rebuilds them, and its identity (hence its store
key) for a wav2vec 2.0 checkpoint with one layer is the one it always had.
"""

from __future__ import annotations

import dataclasses

from msir_keras.features.checkpoints import (  # noqa: F401  (their names here before checkpoints.py)
    DEFAULT_CHECKPOINT,
    CheckpointError,
    checkpoint_fingerprint,
    resolve_checkpoint,
)
from msir_keras.features.random_checkpoints import save_random_checkpoint  # noqa: F401
from msir_keras.features.upstream import DEFAULT_BATCH_SIZE, Upstream, UpstreamConfig  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config(UpstreamConfig):
    """Settings of the wav2vec 2.0 extractor: `UpstreamConfig`'s, normalising by default.

    Args:
        source: str, defaults to "facebook/wav2vec2-base-960h". A hub id or a
            local folder written by `save_pretrained` (of any upstream family).
        layer: int, None or "all", defaults to None: the last hidden state.
        normalize: bool, defaults to True. Zero-mean, unit-variance input per
            utterance, as the base-960h checkpoint's feature extractor does.
    """

    normalize: bool = True


class Wav2Vec2(Upstream):
    """`Upstream` with `Wav2Vec2Config`: the wav2vec branch's extractor as configs before issue 18 name it.

    Args:
        config: Wav2Vec2Config, dict or str (the source). The other
            arguments are `Upstream`'s.
    """

    name = "wav2vec2"
    config_class = Wav2Vec2Config
