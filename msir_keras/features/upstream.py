"""Frozen self-supervised upstreams (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, Whisper) as numpy features."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from msir_keras.audio import SAMPLE_RATE
from msir_keras.features.base import ConfigError, Extractor, FeatureConfig, check_signal
from msir_keras.features.checkpoints import DEFAULT_CHECKPOINT, Checkpoint, resolve_checkpoint
from msir_keras.features.windows import whole_signal_group_norm, windows

DEFAULT_BATCH_SIZE = 8  # utterances per forward pass of the encoder
ALL_LAYERS = "all"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_layer(layer, name="layer"):
    """Returns `layer` when it is a hidden state's index, None (the last hidden state) or "all"."""
    if layer is None or layer == ALL_LAYERS or (isinstance(layer, int) and not isinstance(layer, bool)):
        return layer
    raise ConfigError(f"{name} must be an int (a hidden state: 0 the first block's input, -1 the last block's "
                      f"output), None (the last hidden state) or {ALL_LAYERS!r} (every hidden state), got {layer!r}")


@dataclasses.dataclass(frozen=True)
class UpstreamConfig(FeatureConfig):
    """Settings of the frozen upstream extractor.

    Args:
        source: str, defaults to "facebook/wav2vec2-base-960h". A Hugging Face
            hub id (read from the local hub cache, or downloaded where the hub
            can be reached) or a local folder written by `save_pretrained`, of
            any family in `checkpoints.FAMILIES`; its config.json says which.
        layer: int, None or "all", defaults to None: the last hidden state
            (the paper's choice). An int picks `hidden_states[layer]` (0 is
            the input of the first transformer block, -1 the output of the
            last); "all" keeps every hidden state, (T, layers + 1, hidden),
            stored as float16.
        normalize: bool or None, defaults to None: as the checkpoint's own
            feature extractor (preprocessor_config.json's `do_normalize`;
            without one, True except for Whisper). True: zero-mean,
            unit-variance waveform per utterance.
    """

    source: str = DEFAULT_CHECKPOINT
    layer: int | str | None = None
    normalize: bool | None = None

    def __post_init__(self):
        check_layer(self.layer)
        if self.normalize not in (None, True, False):
            raise ConfigError(f"normalize must be true, false or null, got {self.normalize!r}")


class Upstream(Extractor):
    """Hidden states of a frozen upstream, shaped (T, hidden) or, with layer "all", (T, layers + 1, hidden); 50 Hz.

    Runs on the GPU when PyTorch sees one. Utterances of different lengths
    share a batch, padded with an attention mask, where that leaves each
    one's features as they are alone: layer-norm feature encoders (large
    and XLS-R wav2vec 2.0, HuBERT and WavLM) and Whisper (each utterance is
    its own 30 s window). Elsewhere only utterances of equal length share a
    batch: the group-norm encoders of the base models normalise over time,
    padding included, and data2vec-audio's five stacked positional
    convolutions carry the padding into an utterance's last frames.

    Long signals are encoded in overlapping windows (`msir_keras.features.windows`),
    so memory is bounded by the window, not the recording: `chunk_length`
    seconds each, `chunk_overlap` seconds of context on each side of the
    frames a window keeps. Whisper's encoder only takes 30 s windows: every
    signal is padded to 30 s and only the frames of the real signal kept
    (ceil(samples / 320)); longer ones go window by window, whatever
    `chunk_length` says.

    Args:
        config: UpstreamConfig, dict or str (the source).
        batch_size: int, defaults to 8. Utterances per forward pass.
        device: str or None. A torch device; by default "cuda" when available.
        chunk_length: float or None, defaults to 30. Seconds per window; None
            encodes every signal whole (not Whisper).
        chunk_overlap: float, defaults to 2. Seconds of context on each side.

    Example:
    >>> extractor = Upstream("wavlm-base-plus", layer="all")  # doctest: +SKIP
    >>> extractor(signal).shape, extractor.bytes_per_hour() / 1e9  # doctest: +SKIP
    ((150, 13, 768), 3.594)
    """

    name = "upstream"
    config_class = UpstreamConfig
    parallel = False  # one encoder in this process (and on its GPU), not one per worker

    def __init__(self, config=None, batch_size=DEFAULT_BATCH_SIZE, device=None, chunk_length=30.0, chunk_overlap=2.0,
                 **overrides):
        super().__init__({"source": config} if isinstance(config, str) else config, **overrides)
        if chunk_length is not None and not (chunk_length >= 2 * chunk_overlap + 1.0 and chunk_overlap >= 0):
            raise ValueError(f"chunk_length must be at least 2 x chunk_overlap + 1 s (each window keeps a centre), "
                             f"got {chunk_length} and {chunk_overlap}")
        self.batch_size = batch_size
        self.chunk_length = chunk_length
        self.chunk_overlap = chunk_overlap
        self._device = device
        self._checkpoint = self._model = None

    # === The checkpoint, read without its weights ===

    @property
    def checkpoint(self):
        """The `checkpoints.Checkpoint` of `source`: resolved, its family, shapes and frame grid read."""
        if self._checkpoint is None:
            checkpoint = Checkpoint(resolve_checkpoint(self.config.source))
            layers, layer = checkpoint.num_layers, self.config.layer
            if isinstance(layer, int) and not -(layers + 1) <= layer <= layers:
                raise ConfigError(f"{self.config.source}: layer {layer} is out of range for a "
                                  f"{checkpoint.family.model_type} of {layers} blocks; choose from -{layers + 1} "
                                  f"to {layers}, or {ALL_LAYERS!r}")
            self._checkpoint = checkpoint
        return self._checkpoint

    @property
    def folder(self):
        return self.checkpoint.folder

    @property
    def family(self):
        return self.checkpoint.family

    @property
    def num_layers(self):
        """Transformer blocks: `layer` counts hidden states 0 (before the first) to this (after the last)."""
        return self.checkpoint.num_layers

    @property
    def hidden_size(self):
        return self.checkpoint.hidden_size

    @property
    def geometry(self):
        return self.checkpoint.geometry

    @property
    def frame_rate(self):
        return self.geometry.frame_rate

    @property
    def normalize(self):
        """Whether waveforms are z-scored: the setting, or the checkpoint's own feature extractor's."""
        return self.checkpoint.normalize if self.config.normalize is None else self.config.normalize

    @property
    def all_layers(self):
        return self.config.layer == ALL_LAYERS

    @property
    def feature_shape(self):
        """The shape of one frame: (hidden,), or (layers + 1, hidden) with layer "all"."""
        return (self.num_layers + 1, self.hidden_size) if self.all_layers else (self.hidden_size,)

    @property
    def store_dtype(self):
        return "float16" if self.all_layers else "float32"

    def bytes_per_second(self):
        """Bytes the store holds per second of audio (a frame's values x their size x frames per second)."""
        return self.frame_rate * int(np.prod(self.feature_shape)) * np.dtype(self.store_dtype).itemsize

    def bytes_per_hour(self):
        return int(round(3600 * self.bytes_per_second()))

    # === Identity: what the store keys features by ===

    def identity(self):
        # Keyed by the weights, not the path: a moved folder keeps its cache.
        weights = self.checkpoint.fingerprint
        config = {"layer": self.config.layer, "normalize": self.normalize}
        family = self.family.model_type
        if family == "wav2vec2" and not self.all_layers:
            # Exactly what Wav2Vec2 wrote before other upstreams: its store entries and trained models still match.
            identity = {"extractor": "wav2vec2", "config": config, "weights": weights}
            if (self.chunk_length, self.chunk_overlap) != (30.0, 2.0):
                identity["windows"] = [self.chunk_length, self.chunk_overlap]
            return identity
        return {"extractor": "upstream", "family": family, "config": config, "weights": weights,
                "windows": [self.window_samples and self.window_samples / SAMPLE_RATE, self.chunk_overlap]}

    def key(self):
        """`<family>-<hash of identity>`: wav2vec 2.0's keys are those Wav2Vec2 always gave."""
        identity = self.identity()
        text = json.dumps(identity, sort_keys=True)
        return f"{identity.get('family', 'wav2vec2')}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    # === Encoding ===

    @property
    def model(self):
        if self._model is None:
            import torch

            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = self.checkpoint.load(device)
        return self._model

    @property
    def window_samples(self):
        """Samples per window: Whisper's own 30 s, else `chunk_length` (None: whole signals)."""
        if self.family.whisper:
            return self.checkpoint.front_end.n_samples
        return None if self.chunk_length is None else int(self.chunk_length * SAMPLE_RATE)

    def windows(self, length):
        """The windows of a `length`-sample signal: [((start, stop) samples, (first, stop) kept frames)]."""
        context = int(round(self.chunk_overlap * SAMPLE_RATE / self.geometry.stride))
        return windows(length, self.geometry, self.window_samples, context)

    def _prepare(self, signal):
        signal = np.asarray(check_signal(signal), dtype=np.float32)
        if self.normalize:
            signal = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
        return signal

    def _forward(self, signals):
        """One forward pass over signals that may be padded together: each one's frames."""
        import torch

        model = self.model
        device = next(model.parameters()).device
        lengths = [len(signal) for signal in signals]
        kwargs = {}
        if self.family.whisper:  # each signal padded to its own 30 s window of log-Mels
            inputs = self.checkpoint.front_end(signals, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        else:
            batch = np.zeros((len(signals), max(lengths)), dtype=np.float32)
            mask = np.zeros_like(batch, dtype=np.int64)
            for row, signal in enumerate(signals):
                batch[row, : len(signal)] = signal
                mask[row, : len(signal)] = 1
            inputs = torch.from_numpy(batch)
            if len(set(lengths)) > 1:
                kwargs["attention_mask"] = torch.from_numpy(mask).to(device)
        layer = self.config.layer
        frames = [self.geometry.frames(n) for n in lengths]
        with torch.inference_mode():
            output = model(inputs.to(device), output_hidden_states=layer is not None, **kwargs)
            # Cropped to the longest real signal first: Whisper's 30 s of padding is never copied out.
            if layer is None:
                hidden = output.last_hidden_state[:, : max(frames)]
            elif self.all_layers:
                hidden = torch.stack([state[:, : max(frames)] for state in output.hidden_states], dim=2)
            else:
                hidden = output.hidden_states[layer][:, : max(frames)]
            hidden = hidden.float().cpu().numpy()  # (B, T, hidden) or (B, T, layers + 1, hidden)
        return [self._stored(hidden[row, :count]) for row, count in enumerate(frames)]

    def _stored(self, frames):
        if self.all_layers:
            peak = float(np.abs(frames).max()) if frames.size else 0.0
            if peak > FLOAT16_MAX:
                raise ValueError(f"hidden states reach {peak:.4g}, beyond float16's {FLOAT16_MAX:g}: layer "
                                 f"{ALL_LAYERS!r} cannot store them; choose one layer")
        return frames.astype(self.store_dtype)

    def _encode(self, signal):
        """Features of one prepared signal: whole, or window by window (`windows`)."""
        spans = self.windows(len(signal))
        if len(spans) == 1:
            return self._forward([signal])[0]
        stride = self.geometry.stride
        parts = []
        with whole_signal_group_norm(self.model, signal):
            for (start, stop), (first, last) in spans:
                frames = self._forward([signal[start:stop]])[0]
                parts.append(frames[first - start // stride: last - start // stride])
        return np.concatenate(parts)

    def __call__(self, signal):
        return self._encode(self._prepare(signal))

    def extract_many(self, signals):
        signals = [self._prepare(signal) for signal in signals]
        limit = self.window_samples
        if limit is not None:
            long = {i for i, signal in enumerate(signals) if len(signal) > limit}
            if long:  # window by window, alone; the others in batches
                short = [i for i in range(len(signals)) if i not in long]
                results = dict(zip(short, self.extract_many_prepared([signals[i] for i in short])))
                results.update({i: self._encode(signals[i]) for i in long})
                return [results[i] for i in range(len(signals))]
        return self.extract_many_prepared(signals)

    def extract_many_prepared(self, signals):
        """Features of prepared signals no longer than a window, batched by length."""
        order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
        maskable = self.checkpoint.pads_exactly
        results = [None] * len(signals)
        start = 0
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < self.batch_size
                and (maskable or len(signals[order[stop]]) == len(signals[order[start]]))
            ):
                stop += 1
            chunk = order[start:stop]
            for index, features in zip(chunk, self._forward([signals[i] for i in chunk])):
                results[index] = features
            start = stop
        return results
