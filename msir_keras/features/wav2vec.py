"""The wav2vec 2.0 extractor of old configs and trained models: an `Upstream` under its first name.

Runs, configs and store entries made before other upstreams name the
extractor "wav2vec2" with settings `source`, `layer` and `normalize`.
`Wav2Vec2` rebuilds them, and its identity (hence its store key) for a
wav2vec 2.0 checkpoint with one layer is the one it always had: `normalize`
enters it resolved, and the checkpoint's own feature extractor (what
`normalize=None` follows) z-scores waveforms for the wav2vec 2.0
checkpoints, as the old default True did.
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
    """Settings of the wav2vec 2.0 extractor: `UpstreamConfig`'s, under the name old code imports."""


class Wav2Vec2(Upstream):
    """`Upstream` with `Wav2Vec2Config`: the third branch's extractor under its first name.

    Args:
        config: Wav2Vec2Config, dict or str (the source). The other
            arguments are `Upstream`'s.
    """

    name = "wav2vec2"
    config_class = Wav2Vec2Config
