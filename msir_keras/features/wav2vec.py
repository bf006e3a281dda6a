"""Frozen wav2vec 2.0 features through `transformers` (PyTorch), as numpy arrays."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os

import numpy as np

from msir_keras.audio import SAMPLE_RATE
from msir_keras.features.base import Extractor, FeatureConfig, check_signal

DEFAULT_CHECKPOINT = "facebook/wav2vec2-base-960h"
DEFAULT_BATCH_SIZE = 8  # utterances per forward pass of the encoder
_WEIGHT_FILES = ("config.json", ".safetensors", ".bin")


class CheckpointError(RuntimeError):
    """A wav2vec 2.0 checkpoint that cannot be loaded, with how to give one."""


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config(FeatureConfig):
    """Settings of the frozen wav2vec 2.0 extractor.

    Args:
        source: str, defaults to "facebook/wav2vec2-base-960h". A Hugging Face
            hub id (read from the local hub cache, or downloaded where the hub
            can be reached) or a local folder written by `save_pretrained`.
        layer: int or None, defaults to None: the last hidden state (the
            paper's choice). An int picks `hidden_states[layer]` (0 is the
            projected CNN features, -1 the last transformer layer).
        normalize: bool, defaults to True. Zero-mean, unit-variance input per
            utterance, as the base-960h checkpoint's feature extractor does.
    """

    source: str = DEFAULT_CHECKPOINT
    layer: int | None = None
    normalize: bool = True


def resolve_checkpoint(source):
    """Returns a local folder holding the checkpoint named by `source`.

    Raises:
        CheckpointError: at once, when `source` is neither a folder nor a hub
            id that is cached or can be downloaded; the message says how to
            pass a local folder.
    """
    if os.path.isdir(source):
        if not os.path.exists(os.path.join(source, "config.json")):
            raise CheckpointError(
                f"{source}: no config.json; pass a folder written by "
                "Wav2Vec2Model.save_pretrained(FOLDER)"
            )
        return source
    if os.path.exists(source) or source.startswith((".", "/", "~")):
        raise CheckpointError(f"{source}: no such wav2vec 2.0 checkpoint folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except Exception as error:
        raise CheckpointError(
            f"cannot fetch the wav2vec 2.0 checkpoint {source!r} from the Hugging Face hub "
            f"({type(error).__name__}). On a machine with network, save it once with\n"
            f"  python -c \"from transformers import Wav2Vec2Model; "
            f"Wav2Vec2Model.from_pretrained('{source}').save_pretrained('wav2vec2-base')\"\n"
            "then pass that folder: --wav2vec2 wav2vec2-base (Python: "
            "Wav2Vec2(source='wav2vec2-base')). To run without the wav2vec branch, "
            "pass --wav2vec2 off."
        ) from None


_fingerprints = {}


def checkpoint_fingerprint(folder):
    """A digest of the checkpoint's config and weights: what makes its features.

    Memoised by the files' sizes and modification times: an experiment asks
    once per fold, and hashing a base checkpoint reads 360 MB.
    """
    names = sorted(n for n in os.listdir(folder) if n.endswith(_WEIGHT_FILES))
    stats = [os.stat(os.path.join(folder, n)) for n in names]
    stamps = tuple((n, st.st_size, st.st_mtime_ns) for n, st in zip(names, stats))
    memo = (os.path.abspath(folder), stamps)
    if memo not in _fingerprints:
        _fingerprints[memo] = _hash_files(folder, names)
    return _fingerprints[memo]


def _hash_files(folder, names):
    digest = hashlib.blake2b(digest_size=16)
    for name in names:
        digest.update(name.encode())
        with open(os.path.join(folder, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


class Wav2Vec2(Extractor):
    """Frozen wav2vec 2.0 hidden states, shaped (T, hidden_size), 20 ms hop.

    Runs on the GPU when PyTorch sees one. Batches of utterances are padded
    with an attention mask for checkpoints whose feature encoder uses layer
    norm (`feat_extract_norm="layer"`). The group-norm encoder of the base
    checkpoints normalises over time, padding included, so padded batches
    would change the features: for those only utterances of equal length
    share a batch. Either way a batch gives the features of each utterance
    alone.

    Long signals are encoded in overlapping windows (`chunk_length`), so
    memory is bounded by the window, not the recording: the encoder's
    activations grow about 16 MB per second of audio (base, CPU), so a
    30-minute file encoded whole would need about 28 GB; in 30 s windows the
    peak is that of a 30 s utterance (`benchmarks/wav2vec_long.py`). Each
    window overlaps its neighbours by `chunk_overlap` seconds on each side
    and only the frames of its centre are kept, so every kept frame saw at
    least that much context on both sides; the frame count and the 20 ms
    grid are those of the whole signal. Signals up to `chunk_length` are
    encoded whole (exactly as before).

    Args:
        config: Wav2Vec2Config or dict.
        batch_size: int, defaults to `DEFAULT_BATCH_SIZE` (8). Utterances per forward pass.
        device: str or None. A torch device; by default "cuda" when available.
        chunk_length: float or None, defaults to 30. Seconds per window; None
            encodes every signal whole.
        chunk_overlap: float, defaults to 2. Seconds of context on each side
            of a window's kept centre.
    """

    name = "wav2vec2"
    config_class = Wav2Vec2Config
    parallel = False  # one encoder in this process (and on its GPU), not one per worker

    def __init__(self, config=None, batch_size=DEFAULT_BATCH_SIZE, device=None, chunk_length=30.0, chunk_overlap=2.0, **overrides):
        super().__init__(config, **overrides)
        if chunk_length is not None and not (chunk_length >= 2 * chunk_overlap + 1.0 and chunk_overlap >= 0):
            raise ValueError(f"chunk_length must be at least 2 x chunk_overlap + 1 s (each window keeps a centre), "
                             f"got {chunk_length} and {chunk_overlap}")
        self.batch_size = batch_size
        self.chunk_length = chunk_length
        self.chunk_overlap = chunk_overlap
        self._device = device
        self._folder = None
        self._fingerprint = None
        self._model = None

    @property
    def folder(self):
        if self._folder is None:
            self._folder = resolve_checkpoint(self.config.source)
        return self._folder

    def identity(self):
        # Keyed by the weights, not the path: a moved folder keeps its cache.
        if self._fingerprint is None:
            self._fingerprint = checkpoint_fingerprint(self.folder)
        config = {k: v for k, v in self.get_config().items() if k != "source"}
        identity = {"extractor": self.name, "config": config, "weights": self._fingerprint}
        if (self.chunk_length, self.chunk_overlap) != (30.0, 2.0):  # other windows, other features of long files
            identity["windows"] = [self.chunk_length, self.chunk_overlap]
        return identity

    @property
    def model(self):
        if self._model is None:
            import torch
            from transformers import Wav2Vec2Model

            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = Wav2Vec2Model.from_pretrained(self.folder)
            self._model = model.to(device).eval().requires_grad_(False)
        return self._model

    @property
    def hidden_size(self):
        return self.model.config.hidden_size

    def _prepare(self, signal):
        signal = np.asarray(check_signal(signal), dtype=np.float32)
        if self.config.normalize:
            signal = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
        return signal

    def _forward(self, signals):
        """One forward pass over signals that may be padded together."""
        import torch

        model = self.model
        device = next(model.parameters()).device
        lengths = [len(signal) for signal in signals]
        batch = np.zeros((len(signals), max(lengths)), dtype=np.float32)
        mask = np.zeros_like(batch, dtype=np.int64)
        for row, signal in enumerate(signals):
            batch[row, : len(signal)] = signal
            mask[row, : len(signal)] = 1
        kwargs = {}
        if len(set(lengths)) > 1:
            kwargs["attention_mask"] = torch.from_numpy(mask).to(device)
        layer = self.config.layer
        with torch.inference_mode():
            output = model(
                torch.from_numpy(batch).to(device),
                output_hidden_states=layer is not None,
                **kwargs,
            )
            hidden = output.last_hidden_state if layer is None else output.hidden_states[layer]
            frames = model._get_feat_extract_output_lengths(torch.tensor(lengths))
            hidden = hidden.float().cpu().numpy()
        return [hidden[row, : int(n)] for row, n in enumerate(frames)]

    def _frame_geometry(self):
        """(stride, receptive field) of the convolutional feature encoder, in samples (320, 400 for base)."""
        config = self.model.config
        receptive, jump = 1, 1
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            receptive += (kernel - 1) * jump
            jump *= stride
        return jump, receptive

    def windows(self, length):
        """The windows of a `length`-sample signal: [(start, stop) samples, (first, stop) kept frames].

        One window (the whole signal) when it is no longer than `chunk_length`.
        Frame g of the whole signal covers samples [g * stride, g * stride +
        receptive); a window starting at a multiple of the stride gives the
        same grid, so its frame j is the whole signal's frame start / stride + j.
        """
        import torch

        total = int(self.model._get_feat_extract_output_lengths(torch.tensor(length)))
        if self.chunk_length is None or length <= self.chunk_length * SAMPLE_RATE:
            return [((0, length), (0, total))]
        stride, receptive = self._frame_geometry()
        context = int(round(self.chunk_overlap * SAMPLE_RATE / stride))
        core = (int(self.chunk_length * SAMPLE_RATE) - receptive) // stride + 1 - 2 * context  # window <= chunk
        windows = []
        for first in range(0, total, core):
            stop = min(first + core, total)
            start_sample = max(0, first - context) * stride
            stop_sample = min(length, (stop + context - 1) * stride + receptive)
            windows.append(((start_sample, stop_sample), (first, stop)))
        return windows

    def _encode(self, signal):
        """Features of one prepared signal: whole, or window by window (`windows`)."""
        windows = self.windows(len(signal))
        if len(windows) == 1:
            return self._forward([signal])[0]
        stride = self._frame_geometry()[0]
        parts = []
        with self._whole_signal_group_norm(signal):
            for (start, stop), (first, last) in windows:
                frames = self._forward([signal[start:stop]])[0]
                parts.append(frames[first - start // stride: last - start // stride])
        return np.concatenate(parts)

    @contextlib.contextmanager
    def _whole_signal_group_norm(self, signal):
        """Gives a group-norm encoder's first layer the whole signal's statistics while windows are encoded.

        The base checkpoints' first convolution is followed by a GroupNorm
        with one group per channel: each channel is z-scored over the time
        axis of what it is given. Encoded window by window it would use each
        window's statistics; here they are computed over the whole signal
        first (streamed in windows, in float64), and a forward hook applies
        them. Layer-norm encoders need nothing: their norms are per frame.
        """
        import torch

        model = self.model
        if model.config.feat_extract_norm != "group":
            yield
            return
        layer = model.feature_extractor.conv_layers[0]
        norm = layer.layer_norm
        if not (hasattr(norm, "num_groups") and norm.num_groups == norm.num_channels and norm.affine):
            raise CheckpointError(f"{self.config.source}: the first layer's norm is not one affine group per channel "
                                  "(wav2vec 2.0's GroupNorm); encode long signals whole: chunk_length=None")
        kernel, stride = model.config.conv_kernel[0], model.config.conv_stride[0]
        count = (len(signal) - kernel) // stride + 1
        step = SAMPLE_RATE // stride  # one second at a time: (512, 3200) floats
        device = next(model.parameters()).device
        total = squares = 0.0
        with torch.inference_mode():
            for first in range(0, count, step):
                last = min(first + step, count)
                piece = torch.from_numpy(signal[first * stride: (last - 1) * stride + kernel]).to(device)
                output = layer.conv(piece[None, None])[0].double()  # (channels, frames)
                total = total + output.sum(dim=-1)
                squares = squares + (output * output).sum(dim=-1)
        mean = total / count
        std = torch.sqrt(torch.clamp(squares / count - mean * mean, min=0.0) + layer.layer_norm.eps)

        def whole_signal_statistics(module, inputs, output):
            x = inputs[0]
            scale = (module.weight / std.to(x.dtype))[None, :, None]
            return (x - mean.to(x.dtype)[None, :, None]) * scale + module.bias[None, :, None]

        handle = layer.layer_norm.register_forward_hook(whole_signal_statistics)
        try:
            yield
        finally:
            handle.remove()

    def __call__(self, signal):
        return self._encode(self._prepare(signal))

    def extract_many(self, signals):
        signals = [self._prepare(signal) for signal in signals]
        if self.chunk_length is not None:
            long = {i for i, signal in enumerate(signals) if len(signal) > self.chunk_length * SAMPLE_RATE}
            if long:  # window by window, alone; the others in batches
                short = [i for i in range(len(signals)) if i not in long]
                results = dict(zip(short, self.extract_many_prepared([signals[i] for i in short])))
                results.update({i: self._encode(signals[i]) for i in long})
                return [results[i] for i in range(len(signals))]
        return self.extract_many_prepared(signals)

    def extract_many_prepared(self, signals):
        """Features of prepared signals no longer than `chunk_length`, batched by length."""
        order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
        maskable = self.model.config.feat_extract_norm == "layer"
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


def save_random_checkpoint(folder, size="tiny", seed=0, feat_extract_norm="group"):
    """Saves a randomly initialised wav2vec 2.0 to `folder`, for tests and benchmarks.

    It loads through the same path as a real checkpoint. Its features carry
    no pretrained knowledge: use it to exercise the pipeline, never for results.

    Args:
        folder: str. Where `save_pretrained` writes.
        size: "tiny" (hidden 32, 2 layers) or "base" (the base checkpoint's shape).
        seed: int. Torch seed for the weights.
        feat_extract_norm: "group" (as the base models) or "layer".
    """
    import torch
    from transformers import Wav2Vec2Config as HFConfig
    from transformers import Wav2Vec2Model

    stable = feat_extract_norm == "layer"
    if size == "base":
        config = HFConfig(feat_extract_norm=feat_extract_norm, do_stable_layer_norm=stable)
    elif size == "tiny":
        config = HFConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm=feat_extract_norm,
            do_stable_layer_norm=stable,
        )
    else:
        raise ValueError(f"size must be 'tiny' or 'base', got {size!r}")
    torch.manual_seed(seed)
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    return folder
