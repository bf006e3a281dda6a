"""Upstream checkpoints: where they are, what family they are, what weights they hold, how to load them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

from msir_keras.features.windows import FrameGeometry

DEFAULT_CHECKPOINT = "facebook/wav2vec2-base-960h"
_WEIGHT_FILES = ("config.json", ".safetensors", ".bin")


class CheckpointError(RuntimeError):
    """An upstream checkpoint that cannot be loaded, with how to give one."""


@dataclasses.dataclass(frozen=True)
class Family:
    """One `transformers` family of speech upstreams, as its config.json's `model_type` names it.

    Args:
        model_type: str. config.json's `model_type`.
        model_class: str. The `transformers` class whose hidden states are the features.
        example: str. A hub id a user would pass, for messages and the README.
        normalize: bool. Zero-mean, unit-variance waveforms when the checkpoint
            has no preprocessor_config.json saying otherwise.
    """

    model_type: str
    model_class: str
    example: str
    normalize: bool = True

    @property
    def whisper(self):
        return self.model_type == "whisper"


FAMILIES = {
    family.model_type: family
    for family in (
        Family("wav2vec2", "Wav2Vec2Model", DEFAULT_CHECKPOINT),
        Family("hubert", "HubertModel", "facebook/hubert-base-ls960"),
        Family("wavlm", "WavLMModel", "microsoft/wavlm-base-plus"),
        Family("data2vec-audio", "Data2VecAudioModel", "facebook/data2vec-audio-base-960h"),
        # Whisper normalises its own log-Mels; its waveform is given as is.
        Family("whisper", "WhisperModel", "openai/whisper-base", normalize=False),
    )
}


def _save_advice(source):
    return (
        "On a machine with network, save it once with\n"
        "  python -c \"from transformers import AutoModel, AutoFeatureExtractor as F; "
        f"AutoModel.from_pretrained('{source}').save_pretrained('upstream'); "
        f"F.from_pretrained('{source}').save_pretrained('upstream')\"\n"
        "then pass that folder: --upstream upstream (or --wav2vec2 upstream; Python: "
        "Upstream(source='upstream')). To run without the third branch, pass --wav2vec2 off."
    )


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
                f"{source}: no config.json; pass a folder written by save_pretrained "
                "(e.g. Wav2Vec2Model.save_pretrained(FOLDER))"
            )
        return source
    if os.path.exists(source) or source.startswith((".", "/", "~")):
        raise CheckpointError(f"{source}: no such upstream checkpoint folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except Exception as error:
        raise CheckpointError(
            f"cannot fetch the upstream checkpoint {source!r} from the Hugging Face hub "
            f"({type(error).__name__}). {_save_advice(source)}"
        ) from None


def read_json(folder, name):
    """A checkpoint's JSON file as a dict; {} when the folder has none."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as handle:
            return json.load(handle)
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None


def checkpoint_family(folder):
    """The `Family` of the checkpoint in `folder`, from its config.json's `model_type`.

    Raises:
        CheckpointError: a model type outside `FAMILIES`, naming those.
    """
    model_type = read_json(folder, "config.json").get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"{folder}: model_type {model_type!r} is not an upstream this package reads; "
            f"known: {', '.join(FAMILIES)} (e.g. {', '.join(f.example for f in FAMILIES.values())})"
        )
    return FAMILIES[model_type]


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


def load_encoder(folder, family, device):
    """The frozen model of `family` in `folder` (Whisper: its encoder alone), in eval mode on `device`.

    Raises:
        CheckpointError: most of the model's weights are not in the folder
            (weights of another architecture), which would give random features.
    """
    import transformers

    model, info = getattr(transformers, family.model_class).from_pretrained(folder, output_loading_info=True)
    names = [name for name, _ in model.named_parameters()]
    if family.whisper:  # the decoder is never run: its weights are neither checked nor kept
        model = model.get_encoder()
        names = [f"encoder.{name}" for name, _ in model.named_parameters()]
    missing = set(info.get("missing_keys", ())) & set(names)
    if len(missing) > len(names) // 2:
        raise CheckpointError(
            f"{folder}: {len(missing)} of the {family.model_class}'s {len(names)} weights are not in the "
            f"checkpoint (e.g. {sorted(missing)[0]}): its features would be random. Save the model with "
            "save_pretrained from its own class."
        )
    return model.to(device).eval().requires_grad_(False)


class Checkpoint:
    """A local upstream checkpoint, read without its weights: family, shapes, frame grid, front end.

    Args:
        folder: str. A folder with config.json (`resolve_checkpoint`).

    Raises:
        CheckpointError: a family this package does not read, an adapter
            that changes the frame rate, or a Whisper feature extractor that
            does not fill the encoder's positions.
    """

    def __init__(self, folder):
        from transformers import AutoConfig

        self.folder = folder
        self.family = checkpoint_family(folder)
        self.settings = AutoConfig.from_pretrained(folder)
        if getattr(self.settings, "add_adapter", False):
            raise CheckpointError(f"{folder}: an adapter on the encoder changes the frame rate; give the "
                                  "checkpoint without it")
        preprocessor = read_json(folder, "preprocessor_config.json")
        # The checkpoint's own feature extractor z-scores waveforms or not; a folder without one, as its family.
        self.normalize = bool(preprocessor.get("do_normalize", self.family.normalize))
        # Whether utterances of different lengths may share a padded batch and keep their features as alone:
        # Whisper pads each to its own window; group norms normalise over the padding too, and data2vec's
        # stacked positional convolutions carry it into the last frames.
        norm = getattr(self.settings, "feat_extract_norm", "layer")
        self.pads_exactly = self.family.whisper or (self.family.model_type != "data2vec-audio" and norm == "layer")
        self.front_end = None
        if self.family.whisper:
            self.num_layers, self.hidden_size = self.settings.encoder_layers, self.settings.d_model
            self.front_end = self._whisper_front_end(bool(preprocessor))
            self.geometry = FrameGeometry.whisper(self.front_end.hop_length, self.front_end.n_fft)
        else:
            self.num_layers, self.hidden_size = self.settings.num_hidden_layers, self.settings.hidden_size
            self.geometry = FrameGeometry.convolutional(self.settings.conv_kernel, self.settings.conv_stride)

    def _whisper_front_end(self, saved):
        from transformers import WhisperFeatureExtractor

        if saved:
            front_end = WhisperFeatureExtractor.from_pretrained(self.folder)
        else:  # a folder of the model alone: Whisper's standard front end at its number of Mels
            front_end = WhisperFeatureExtractor(feature_size=self.settings.num_mel_bins)
        positions = self.settings.max_source_positions
        if front_end.nb_max_frames != 2 * positions or front_end.feature_size != self.settings.num_mel_bins:
            raise CheckpointError(f"{self.folder}: the feature extractor's {front_end.nb_max_frames} frames of "
                                  f"{front_end.feature_size} Mels do not fit the encoder's {positions} positions "
                                  f"of {self.settings.num_mel_bins} Mels")
        return front_end

    @functools.cached_property
    def fingerprint(self):
        return checkpoint_fingerprint(self.folder)

    def load(self, device):
        """The frozen model (Whisper: its encoder), on `device` (`load_encoder`)."""
        return load_encoder(self.folder, self.family, device)
