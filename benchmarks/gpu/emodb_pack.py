"""The EmoDB feature pack that travels to the GPU machine: written by pack.py, read by train.py.

The GPU machine has no openSMILE and no corpus audio, and what travels is
limited to 64 MiB, so the pack holds the features the package's extractors
made here (read from its feature store), cut down to what cannot be
recomputed there, in float16:

- `logmel`: the static plane of the 2D log-Mels (T, 40); the delta plane
  is recomputed with `python_speech_features.delta`, as `LogMel.__call__`
  computes it.
- `lld`: the 65 ComParE LLDs and openSMILE's own deltas (T, 130); the
  second-order deltas (the last 65 of the 3D-LLD's 195) are recomputed with
  `python_speech_features.delta` over openSMILE's deltas, as `LLD.__call__`
  computes them. openSMILE's first-order deltas cannot be recomputed
  without openSMILE, so they travel.

float16 reaches 65504 and some ComParE LLDs exceed it: every column is
divided by a power of two (`scale`) that brings its largest magnitude
below 2**14 before the cast, and multiplied back on loading (exact; only
float16's rounding, 2**-11 relative, is lost).

Beside the features: each utterance's label, speaker, gender and file name,
and the 5 speaker-independent folds (`msir_keras.corpora.make_folds`,
the `msir run` defaults) as row indices, so the GPU machine needs no corpus
code. Needs numpy and python_speech_features alone.
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMAT = 1
FEATURES_FILE = "emodb.npz"
MANIFEST_FILE = "manifest.json"
WHEELS_FOLDER = "wheels"
# The package's modules train.py imports on the GPU machine: pack.py checks that every third-party
# module they import is there or carried.
TRAIN_IMPORTS = ("msir_keras.data", "msir_keras.batches", "msir_keras.engine", "msir_keras.config",
                 "msir_keras.metrics", "msir_keras.corpora", "msir_keras.model")
# The float16 value each column's largest magnitude is scaled below.
_HEADROOM_EXPONENT = 14


def to_float16(flat):
    """(F, D) float32 -> ((F, D) float16, (D,) float32 power-of-two scales) with no overflow."""
    flat = np.asarray(flat, dtype=np.float32)
    peak = np.abs(flat).max(axis=0) if len(flat) else np.zeros(flat.shape[1:], np.float32)
    exponent = np.where(peak > 0, np.floor(np.log2(np.where(peak > 0, peak, 1.0))) + 1 - _HEADROOM_EXPONENT, 0)
    scale = np.exp2(exponent).astype(np.float32)
    stored = (flat / scale).astype(np.float16)
    if not np.all(np.isfinite(stored)):
        raise ValueError("float16 overflow after scaling (a bug in to_float16)")
    return stored, scale


def from_float16(stored, scale):
    """The inverse of `to_float16` (exact up to float16's rounding)."""
    return stored.astype(np.float32) * scale


def split(flat, lengths):
    """(F, ...) rows -> one array per utterance of `lengths` rows."""
    return np.split(flat, np.cumsum(lengths)[:-1])


def deltas(features, width):
    """The delta regression the package's extractors use (`python_speech_features.delta`), float32."""
    import python_speech_features as psf

    return psf.delta(np.asarray(features, dtype=np.float32), width).astype(np.float32)


def rebuild_logmel(static, config):
    """(T, n_filters) static log-Mels -> (T, n_filters, 1 + deltas), as `LogMel.__call__` stacks its planes."""
    planes = [np.asarray(static, dtype=np.float32)]
    for _ in range(config["deltas"]):
        planes.append(deltas(planes[-1], config["delta_width"]))
    return np.stack(planes, axis=-1)


def rebuild_lld(carried, config, base_dim):
    """(T, base_dim * (1 + min(deltas, 1))) LLDs and openSMILE deltas -> (T, base_dim * (1 + deltas)).

    The second-order deltas are `psf.delta` of openSMILE's deltas, as `LLD.__call__` computes them.
    """
    parts = [np.asarray(carried, dtype=np.float32)]
    if config["deltas"] >= 2:
        parts.append(deltas(parts[0][:, base_dim:2 * base_dim], config["delta_width"]))
    return np.concatenate(parts, axis=1)


def carried_logmel(array):
    """What travels of one utterance's log-Mels: the static plane."""
    return array[..., 0]


def carried_lld(array, config, base_dim):
    """What travels of one utterance's LLDs: the LLDs and openSMILE's deltas."""
    return array[:, : base_dim * (1 + min(config["deltas"], 1))]


def read_manifest(folder):
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no pack here (run benchmarks/gpu/pack.py first; a pack whose size "
                                "check failed has no manifest)")
    with open(path) as handle:
        manifest = json.load(handle)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: pack format {manifest.get('format')}, this reader reads {FORMAT}: run pack.py again")
    return manifest


def load(folder):
    """The pack in `folder`: a dict with the manifest, every model input rebuilt per utterance, the
    labels (class ids), speakers, names and folds ([(name, train, validation, test)] row indices)."""
    manifest = read_manifest(folder)
    with np.load(os.path.join(folder, FEATURES_FILE), allow_pickle=False) as pack:
        arrays = {name: pack[name] for name in pack.files}
    extractors = manifest["extractors"]
    logmel = [rebuild_logmel(a, extractors["logmel"]["config"])
              for a in split(from_float16(arrays["logmel"], arrays["logmel_scale"]), arrays["logmel_lengths"])]
    lld = [rebuild_lld(a, extractors["lld"]["config"], extractors["lld"]["base_dim"])
           for a in split(from_float16(arrays["lld"], arrays["lld_scale"]), arrays["lld_lengths"])]
    folds = [(str(name), arrays[f"fold{i}_train"], arrays[f"fold{i}_validation"], arrays[f"fold{i}_test"])
             for i, name in enumerate(arrays["fold_names"])]
    return {"manifest": manifest, "features": {"logmel": logmel, "lld": lld}, "labels": arrays["labels"],
            "speakers": arrays["speakers"], "names": arrays["names"], "folds": folds}
