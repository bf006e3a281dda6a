"""Long signals through an upstream in overlapping windows: bounded memory, the whole signal's frame grid.

An upstream's frame g depends on samples [g * stride - ..., g * stride +
reach): a window that starts at a multiple of the stride has the same grid,
so its frame j is the whole signal's frame start / stride + j. Each window
overlaps its neighbours by `context` frames on each side and keeps only the
frames of its centre, so every kept frame saw at least that much context on
both sides, and the kept frames tile the whole signal's frames exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses

from msir_keras.audio import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class FrameGeometry:
    """Where an upstream's frames sit on the signal, in samples.

    Args:
        stride: int. Samples between frames (320: 50 Hz at 16 kHz).
        reach: int. Frame g depends on samples before g * stride + reach
            (a CNN's receptive field; Whisper's STFT and convolutions).
        kernels: tuple of (kernel, stride) of a convolutional feature
            encoder, whose frame count is computed layer by layer as
            `transformers` does; () for Whisper, whose frame count is
            ceil(samples / stride).
    """

    stride: int
    reach: int
    kernels: tuple = ()

    @property
    def frame_rate(self):
        return SAMPLE_RATE / self.stride

    def frames(self, length):
        """The number of frames of a `length`-sample signal."""
        if not self.kernels:
            return -(-length // self.stride)
        for kernel, stride in self.kernels:
            length = (length - kernel) // stride + 1
        return max(0, length)

    @classmethod
    def convolutional(cls, conv_kernel, conv_stride):
        """The geometry of wav2vec 2.0's feature encoder (and HuBERT's, WavLM's, data2vec's)."""
        reach, jump = 1, 1
        for kernel, stride in zip(conv_kernel, conv_stride):
            reach += (kernel - 1) * jump
            jump *= stride
        return cls(jump, reach, tuple(zip(conv_kernel, conv_stride)))

    @classmethod
    def whisper(cls, hop_length, n_fft):
        """Whisper's: centred STFT frames every hop, then two 3-tap convolutions, the second of stride 2."""
        return cls(2 * hop_length, 2 * hop_length + n_fft // 2)


def windows(length, geometry, window_samples, context):
    """The windows of a `length`-sample signal: [((start, stop) samples, (first, stop) kept frames)].

    One window (the whole signal) when `window_samples` is None or the
    signal is no longer. Each window is at most `window_samples` long and
    keeps `core` frames, with `context` frames of context on each side
    (fewer at the signal's ends).
    """
    total = geometry.frames(length)
    if window_samples is None or length <= window_samples:
        return [((0, length), (0, total))]
    stride, reach = geometry.stride, geometry.reach
    core = (window_samples - reach) // stride + 1 - 2 * context
    if core < 1:
        raise ValueError(f"a window of {window_samples} samples keeps no frame with {context} frames of context")
    spans = []
    for first in range(0, total, core):
        stop = min(first + core, total)
        start_sample = max(0, first - context) * stride
        stop_sample = min(length, (stop + context - 1) * stride + reach)
        spans.append(((start_sample, stop_sample), (first, stop)))
    return spans


@contextlib.contextmanager
def whole_signal_group_norm(model, signal):
    """Gives a group-norm feature encoder's first layer the whole signal's statistics while windows are encoded.

    The base checkpoints of wav2vec 2.0, HuBERT and WavLM follow their first
    convolution with a GroupNorm of one group per channel: each channel is
    z-scored over the time axis of what it is given. Encoded window by
    window it would use each window's statistics; here they are computed
    over the whole signal first (streamed a second at a time, in float64),
    and a forward hook applies them. Layer-norm encoders need nothing: their
    norms are per frame.

    Raises:
        ValueError: the first layer's norm is not one affine group per channel.
    """
    import torch

    config = model.config
    if getattr(config, "feat_extract_norm", "layer") != "group":
        yield
        return
    layer = model.feature_extractor.conv_layers[0]
    norm = layer.layer_norm
    if not (hasattr(norm, "num_groups") and norm.num_groups == norm.num_channels and norm.affine):
        raise ValueError("the first layer's norm is not one affine group per channel (wav2vec 2.0's GroupNorm); "
                         "encode long signals whole: chunk_length=None")
    kernel, stride = config.conv_kernel[0], config.conv_stride[0]
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
    std = torch.sqrt(torch.clamp(squares / count - mean * mean, min=0.0) + norm.eps)

    def whole_signal_statistics(module, inputs, output):
        x = inputs[0]
        scale = (module.weight / std.to(x.dtype))[None, :, None]
        return (x - mean.to(x.dtype)[None, :, None]) * scale + module.bias[None, :, None]

    handle = norm.register_forward_hook(whole_signal_statistics)
    try:
        yield
    finally:
        handle.remove()
