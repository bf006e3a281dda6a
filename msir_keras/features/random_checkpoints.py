"""Randomly initialised upstream checkpoints of every family, saved as real ones: for tests and benchmarks.

They load through the same path as a real checkpoint. Their features carry
no pretrained knowledge: use them to exercise the pipeline, never for results.
"""

from __future__ import annotations

from msir_keras.features.checkpoints import FAMILIES

# Shapes beside each family's defaults (which are the base checkpoints', except Whisper's).
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7)
_TINY_POSITIONS = dict(num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
_WHISPER_TOKENS = dict(vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       decoder_start_token_id=1, begin_suppress_tokens=None, suppress_tokens=None)
_WHISPER = {
    "tiny": dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                 decoder_attention_heads=2, decoder_ffn_dim=64, **_WHISPER_TOKENS),
    # openai/whisper-base's encoder; a one-block decoder (never run) keeps the folder small.
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, decoder_layers=1,
                 decoder_attention_heads=8, decoder_ffn_dim=2048, **_WHISPER_TOKENS),
}


def random_config(family="wav2vec2", size="tiny", feat_extract_norm="group"):
    """The `transformers` config of a random checkpoint (see `save_random_checkpoint`)."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if size not in ("tiny", "base"):
        raise ValueError(f"size must be 'tiny' or 'base', got {size!r}")
    if family == "whisper":
        return transformers.WhisperConfig(**_WHISPER[size])
    if family == "data2vec-audio":  # layer norm only; five positional convolutions
        tiny = dict(_TINY, conv_pos_kernel_size=5, num_conv_pos_embeddings=5)
        return transformers.Data2VecAudioConfig(**(tiny if size == "tiny" else {}))
    config_class = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig,
                    "wavlm": transformers.WavLMConfig}[family]
    norm = dict(feat_extract_norm=feat_extract_norm, do_stable_layer_norm=feat_extract_norm == "layer")
    return config_class(**(dict(_TINY, **_TINY_POSITIONS) if size == "tiny" else {}), **norm)


def save_random_checkpoint(folder, size="tiny", seed=0, feat_extract_norm="group", family="wav2vec2"):
    """Saves a randomly initialised upstream to `folder` (and Whisper's feature extractor beside it).

    Args:
        folder: str. Where `save_pretrained` writes.
        size: "tiny" (hidden 32, 2 layers) or "base" (the base checkpoint's
            shape: hidden 768, 12 layers; Whisper: whisper-base's encoder,
            512 and 6).
        seed: int. Torch seed for the weights.
        feat_extract_norm: "group" (as the base models) or "layer" (the
            large and XLS-R "stable layer norm" ones); wav2vec 2.0, HuBERT
            and WavLM only.
        family: str, defaults to "wav2vec2". A `model_type` of `FAMILIES`.

    Returns:
        `folder`.
    """
    import torch
    import transformers

    config = random_config(family, size, feat_extract_norm)
    torch.manual_seed(seed)
    getattr(transformers, FAMILIES[family].model_class)(config).eval().save_pretrained(folder)
    if family == "whisper":
        transformers.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    return folder
