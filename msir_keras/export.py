"""SavedModel export, and `Detector`: emotion probabilities from audio files.

A model folder is either a run's fold folder (`model.keras`) or an export
(`saved_model.pb` + `msir.json`). Both carry the feature settings the model
was trained with, so a Detector extracts exactly those, and refuses features
made with other settings.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from msir_keras.audio import SAMPLE_RATE, AudioError, read_audio
from msir_keras.features import extractor_from_config
from msir_keras.features.base import ConfigError
from msir_keras.features.store import nonfinite_problem

METADATA = "msir.json"


def model_metadata(model):
    """What a served model needs besides its weights: feature settings and class names."""
    return {
        "feature_config": model.feature_config,
        "class_names": model.class_names,
        "input_shapes": {name: list(shape) for name, shape in model.feature_shapes().items()},
    }


def to_numpy(tensor):
    """A model's output as a numpy array, from any Keras backend (a PyTorch tensor may carry gradients)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(tensor))


def tensorflow_backend():
    """Whether Keras runs on TensorFlow: SavedModels (writing and loading them) need it."""
    import keras

    return keras.backend.backend() == "tensorflow"


def export_model(model, folder):
    """Writes a TensorFlow SavedModel of `model` (endpoint `serve`) and its msir.json.

    Raises ConfigError under another Keras backend: a SavedModel is TensorFlow's.

    The serving signature takes the padded feature tensors by input name
    (`logmel` (B, T, 40, K), `lld` (B, T, D), `w2v` (B, T, 768), float32,
    right-padded with zeros) and returns class probabilities (B, C).
    """
    if not tensorflow_backend():
        import keras

        raise ConfigError(f"a SavedModel is TensorFlow's; Keras runs on {keras.backend.backend()} here "
                          "(KERAS_BACKEND): export under KERAS_BACKEND=tensorflow, or serve model.keras as it is")
    model.export(folder, format="tf_saved_model", verbose=False)
    with open(os.path.join(folder, METADATA), "w") as handle:
        json.dump(model_metadata(model), handle, indent=2)
    return folder


def model_folders(path):
    """{(target, fold): folder} of every model under a run or export folder.

    A single model folder is returned as {("model", "model"): path}.
    """
    if _is_model_folder(path):
        return {("model", "model"): path}
    found = {}
    for target in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        base = os.path.join(path, target)
        for fold in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if _is_model_folder(os.path.join(base, fold)):
                found[(target, fold)] = os.path.join(base, fold)
    if not found:
        raise FileNotFoundError(
            f"{path}: no model here; pass a run folder written by `msir run`/`msir train`, "
            "an export written by `msir export`, or one of their fold folders"
        )
    return found


def _is_model_folder(folder):
    return os.path.exists(os.path.join(folder, "model.keras")) or os.path.exists(
        os.path.join(folder, "saved_model.pb")
    )


SERVING = "serving"  # a fold folder's SavedModel, written beside model.keras for fast loading


class LoadedModel:
    """One model from a folder: `.keras` or SavedModel, with its metadata.

    A run's fold folder holds both `model.keras` and `serving/` (its
    SavedModel): prediction loads the SavedModel, whose graph is already
    traced (seconds faster in a new process); `keras=True` loads the Keras
    model (for export, or to train on). `call` is the model as a function of
    padded feature tensors.
    """

    def __init__(self, folder, keras=False):
        self.folder = folder
        keras_file = os.path.join(folder, "model.keras")
        serving = os.path.join(folder, SERVING)
        self.traced = False
        if not keras and os.path.exists(os.path.join(serving, "saved_model.pb")) and \
                (tensorflow_backend() or not os.path.exists(keras_file)):
            folder = serving  # under JAX or PyTorch, a run's model.keras is read instead
        if folder != serving and os.path.exists(keras_file):
            from msir_keras.model import load_model

            # Prediction needs no optimizer or loss: compile=False loads faster.
            self.model = load_model(keras_file, compile=False)
            self.metadata = model_metadata(self.model)
            self.call = lambda inputs: self.model(inputs, training=False)
        else:
            if not tensorflow_backend():
                raise ConfigError(f"{folder}: a SavedModel export loads under KERAS_BACKEND=tensorflow only; "
                                  "give the run folder (its model.keras files load on any backend)")
            import tensorflow as tf

            metadata = os.path.join(folder, METADATA)
            if not os.path.exists(metadata):
                raise FileNotFoundError(
                    f"{metadata}: missing; a SavedModel needs the msir.json that `msir export` writes "
                    "beside it (export the run again)"
                )
            with open(metadata) as handle:
                self.metadata = json.load(handle)
            self.model = tf.saved_model.load(folder)
            self.call = lambda inputs: self.model.serve(inputs)
            self.traced = True  # its serving function is a graph already: no tracing needed

    @property
    def class_names(self):
        return self.metadata["class_names"]

    @property
    def feature_config(self):
        return self.metadata["feature_config"]

    @property
    def input_shapes(self):
        return {name: tuple(shape) for name, shape in self.metadata["input_shapes"].items()}

    def select(self, inputs):
        """The entries of `inputs` (a dict by input name) this model takes; others are left out."""
        return {name: value for name, value in inputs.items() if name in self.metadata["input_shapes"]}

    def check_inputs(self, inputs):
        """Raises ConfigError when `inputs` do not fit the features the model was trained on."""
        expected = self.metadata["input_shapes"]
        if set(inputs) != set(expected):
            raise ConfigError(
                f"{self.folder}: the model takes inputs {sorted(expected)}, got {sorted(inputs)}"
            )
        for name, shape in expected.items():
            got = list(np.shape(inputs[name])[2:])
            if got != list(shape):
                settings = (self.feature_config or {}).get(name, {})
                raise ConfigError(
                    f"{self.folder}: the model was trained on {name} frames shaped {shape} "
                    f"({settings}), got {got}: extract the features with the model's settings "
                    "(Detector does this from audio)"
                )

    def __call__(self, inputs):
        self.check_inputs(inputs)
        return to_numpy(self.call({k: np.asarray(v, np.float32) for k, v in inputs.items()}))


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".mp3")


def _readable_audio(path):
    """Whether libsndfile can open the file (any format it knows, whatever the suffix)."""
    import soundfile

    try:
        soundfile.info(path)
        return True
    except Exception:
        return False


def audio_files(arguments, warn=None):
    """Files to predict: each argument a file, or a folder searched (recursively) for audio.

    In a folder, files with a known audio suffix are taken, and any other
    file libsndfile can open (.opus, .caf, .w64 ...); `warn` (callable(str))
    is told how many files were left out, and which.
    """
    files = []
    for argument in arguments:
        if os.path.isdir(argument):
            found, skipped = [], []
            for folder, _, names in os.walk(argument):
                for name in names:
                    path = os.path.join(folder, name)
                    if name.lower().endswith(AUDIO_SUFFIXES) or (
                            not name.startswith(".") and os.path.isfile(path) and _readable_audio(path)):
                        found.append(path)
                    elif not name.startswith("."):  # hidden files (.DS_Store ...) are not mentioned
                        skipped.append(path)
            if not found:
                raise FileNotFoundError(f"{argument}: a folder with no audio file that libsndfile can read "
                                        f"({', '.join(AUDIO_SUFFIXES)}, ...)")
            if skipped and warn is not None:
                warn(f"{argument}: {len(skipped)} file(s) left out, not audio that libsndfile can read: "
                     + ", ".join(os.path.relpath(p, argument) for p in sorted(skipped)[:5])
                     + (" ..." if len(skipped) > 5 else ""))
            files += sorted(found)
        else:
            files.append(argument)
    return files


class Detector:
    """Per-emotion probabilities and decisions for audio files, from a run or an export.

    A classification run gives the class probabilities (decision: the most
    probable class). A detection run gives each emotion's detector's positive
    probability (decision: above `threshold`). With several folds the fold
    models' probabilities are averaged, unless `fold` picks one. Every fold
    model runs inside one graph function, traced once for any batch size and
    length (the time axis is left open), so a new file length costs no new
    trace.

    Args:
        path: str. A run folder, an export folder, or one fold's folder.
        fold: str or None. The fold to use (its folder name); None averages all.
        threshold: float, defaults to 0.5. Detection decisions.
        wav2vec2: str or None. Another location of the wav2vec 2.0 checkpoint
            the model was trained with (the same weights are checked).

    Example:
    >>> detector = Detector("runs/emodb")  # doctest: +SKIP
    >>> detector.predict(["speech.wav"])  # doctest: +SKIP
    """

    def __init__(self, path, fold=None, threshold=0.5, wav2vec2=None):
        folders = model_folders(path)
        if fold is not None:
            folders = {key: f for key, f in folders.items() if key[1] == fold}
            if not folders:
                raise ValueError(f"{path}: no fold named {fold!r}")
        self.models = {key: LoadedModel(folder) for key, folder in folders.items()}
        self.threshold = threshold
        # Every input any model takes (fused folds may each have chosen other functionals);
        # an input two models share must have been made alike.
        self.feature_config, self.input_shapes = {}, {}
        for model in self.models.values():
            for name, shape in model.input_shapes.items():  # the inputs it takes (its config may hold more)
                entry = (model.feature_config or {}).get(name)
                if entry is None:
                    raise ConfigError(f"{model.folder}: the model does not say how its {name} features were made")
                if self.feature_config.setdefault(name, entry) != entry or \
                        self.input_shapes.setdefault(name, shape) != shape:
                    raise ConfigError(f"{path}: its models were trained on different {name} features")
        self.extractors = {}
        for name, entry in self.feature_config.items():
            config = dict(entry["config"])
            if wav2vec2 is not None and entry["extractor"] == "wav2vec2":
                config["source"] = wav2vec2
            extractor = extractor_from_config(entry["extractor"], config)
            if "identity" in entry and extractor.identity() != entry["identity"]:
                raise ConfigError(
                    f"{path}: the model's {name} features were made by {entry['identity']}, "
                    f"but {config} makes {extractor.identity()}; give the checkpoint it was "
                    "trained with (--wav2vec2 FOLDER)"
                )
            self.extractors[name] = extractor
        self.targets = sorted({key[0] for key in self.models})
        self.class_names = {
            target: next(m for (t, _), m in self.models.items() if t == target).class_names
            for target in self.targets
        }
        self._forward = None

    def _function(self):
        """The fold-averaging graph function, traced on first use."""
        if self._forward is None:
            import tensorflow as tf

            signature = {
                name: tf.TensorSpec((None, None, *shape), tf.float32, name=name)
                for name, shape in self.input_shapes.items()
            }
            groups = {t: [m for (target, _), m in self.models.items() if target == t] for t in self.targets}

            @tf.function(input_signature=[signature])
            def forward(inputs):
                return {t: tf.add_n([m.call(m.select(inputs)) for m in models]) / len(models)
                        for t, models in groups.items()}

            self._forward = forward
        return self._forward

    def features(self, signals):
        """{input name: padded batch} of float32 mono 16 kHz signals."""
        from msir_keras.data import pad_batch

        return {
            name: pad_batch(extractor.extract_many(signals))
            for name, extractor in self.extractors.items()
        }

    def probabilities(self, inputs):
        """{target: (B, C) probabilities averaged over folds} of padded features."""
        for model in self.models.values():
            model.check_inputs(model.select(inputs))
        inputs = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
        if all(m.traced for m in self.models.values()) or not tensorflow_backend():
            # SavedModels: their graphs exist; wrapping them in a new function would trace again.
            return {t: np.mean([to_numpy(m.call(m.select(inputs))) for (target, _), m in self.models.items()
                                if target == t], axis=0) for t in self.targets}
        outputs = self._function()(inputs)
        return {target: value.numpy() for target, value in outputs.items()}

    def _rows(self, probabilities, rows):
        """Adds each target's probabilities and decisions to `rows` (one dict per input)."""
        for target, values in probabilities.items():
            names = self.class_names[target]
            if len(names) == 2 and names[0].startswith("not-"):
                emotion = names[1]
                for row, p in zip(rows, values[:, 1]):
                    row[f"p_{emotion}"] = float(p)
                    row[emotion] = bool(p >= self.threshold)
            else:
                for row, p in zip(rows, values):
                    row["predicted"] = names[int(np.argmax(p))]
                    for name, value in zip(names, p):
                        row[f"p_{name}"] = float(value)
                        row[name] = names[int(np.argmax(p))] == name
        return rows

    def predict(self, paths, batch_size=16, errors="raise", warn=None):
        """A DataFrame: one row per file, per emotion its probability and decision.

        Files are read and predicted in batches of similar length.

        Args:
            paths: list of str. Audio files.
            batch_size: int, defaults to 16. Files per forward pass.
            errors: "raise" (the first bad file raises AudioError) or
                "collect": a bad file gets a row with its reason in an
                `error` column, and the other files are still predicted.
            warn: callable(str) or None. Told of suspicious audio (truncated,
                digital silence); None leaves the warnings to Python's
                `warnings` module.
        """
        import pandas as pd
        import soundfile

        from msir_keras.audio import AudioError, AudioWarning

        paths = [str(path) for path in paths]

        def frames(path):
            try:
                return soundfile.info(path).frames
            except Exception:
                return 0  # read_audio names the problem below

        order = sorted(range(len(paths)), key=lambda i: frames(paths[i]))
        rows = [{"path": path} for path in paths]
        for start in range(0, len(order), batch_size):
            chunk, signals = [], []
            for index in order[start : start + batch_size]:
                try:
                    with warnings.catch_warnings(record=warn is not None) as caught:
                        if warn is not None:
                            warnings.simplefilter("always", AudioWarning)
                        signal = read_audio(paths[index])
                    for entry in caught or []:
                        warn(str(entry.message))
                except AudioError as error:
                    if errors == "raise":
                        raise
                    rows[index]["error"] = error.reason
                    continue
                chunk.append(index)
                signals.append(signal)
            if not chunk:
                continue
            arrays = {name: extractor.extract_many(signals) for name, extractor in self.extractors.items()}
            kept = []
            for position, index in enumerate(chunk):
                problem = next((f"{name} {reason}" for name in arrays
                                if (reason := nonfinite_problem(np.asarray(arrays[name][position]))) is not None),
                               None)
                if problem is None:
                    kept.append(position)
                    continue
                reason = (f"{problem} from {len(signals[position]) / SAMPLE_RATE * 1000:.0f} ms of audio; "
                          "the file is too short or damaged for these features")
                if errors == "raise":
                    raise AudioError(paths[index], reason)
                rows[index]["error"] = reason
            if not kept:
                continue
            from msir_keras.data import pad_batch

            probabilities = self.probabilities(
                {name: pad_batch([values[p] for p in kept]) for name, values in arrays.items()})
            finite = np.all([np.isfinite(v).all(axis=-1) for v in probabilities.values()], axis=0)
            for position, ok in zip(kept, finite):
                if not ok:
                    reason = "the model gave NaN or infinite probabilities for this file; nothing is reported for it"
                    if errors == "raise":
                        raise AudioError(paths[chunk[position]], reason)
                    rows[chunk[position]]["error"] = reason
            good = np.flatnonzero(finite)
            self._rows({t: v[good] for t, v in probabilities.items()}, [rows[chunk[kept[g]]] for g in good])
        table = pd.DataFrame(rows)
        if "error" in table:
            table = table[[c for c in table.columns if c != "error"] + ["error"]]
        return table

    def timeline(self, path, window=4.0, hop=1.0, batch_size=32):
        """Emotion probabilities over a long recording, one row per window.

        Features whose frames depend only on their neighbourhood (log-Mels,
        LLDs) are computed once for the whole file and sliced into windows;
        wav2vec 2.0 features (attention over the whole input) and a fused
        model's utterance-level functionals are computed per window, in batches. Memory grows with the file's length only through
        those whole-file features (about 0.7 MB per minute for log-Mels and
        3D-LLDs); windows are cut and predicted `batch_size` at a time.

        Args:
            path: str. An audio file of any length.
            window: float, defaults to 4.0. Window length in seconds.
            hop: float, defaults to 1.0. Seconds between window starts.
            batch_size: int, defaults to 32. Windows per forward pass.

        Returns:
            A DataFrame: start, end (seconds), and per emotion its
            probability (and decision), one row per window.
        """
        import pandas as pd

        from msir_keras.audio import SAMPLE_RATE
        from msir_keras.data import pad_batch

        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive seconds, got {window} and {hop}")
        signal = read_audio(path)
        duration = len(signal) / SAMPLE_RATE
        starts = np.arange(0.0, max(duration - window, 0.0) + 1e-9, hop)
        whole = {
            name: extractor(signal)
            for name, extractor in self.extractors.items()
            if extractor.frame_step is not None
        }
        for name, array in whole.items():
            problem = nonfinite_problem(np.asarray(array))
            if problem is not None:
                raise AudioError(path, f"{name} {problem}; no timeline is written")
        rows = []
        for first in range(0, len(starts), batch_size):
            batch = starts[first : first + batch_size]
            inputs = {}
            for name, extractor in self.extractors.items():
                if name in whole:
                    step = extractor.frame_step
                    pieces = [whole[name][int(round(s / step)) : int(round((s + window) / step))]
                              for s in batch]
                else:
                    pieces = extractor.extract_many(
                        [signal[int(s * SAMPLE_RATE) : int((s + window) * SAMPLE_RATE)] for s in batch]
                    )
                inputs[name] = pad_batch(pieces)
            batch_rows = [{"start": float(s), "end": float(min(s + window, duration))} for s in batch]
            probabilities = self.probabilities(inputs)
            for values in probabilities.values():
                bad = np.flatnonzero(~np.isfinite(values).all(axis=-1))
                if len(bad):
                    raise AudioError(path, f"the model gave NaN or infinite probabilities for "
                                           f"{len(bad)} window(s) from {batch[bad[0]]:g} s; no timeline is written")
            rows += self._rows(probabilities, batch_rows)
        return pd.DataFrame(rows)


def export_run(path, out):
    """Exports every model of a run (or one model folder) as SavedModels under `out`.

    Returns:
        The list of written folders.
    """
    written = []
    for (target, fold), folder in model_folders(path).items():
        loaded = LoadedModel(folder, keras=True)
        if not hasattr(loaded.model, "export"):
            raise ValueError(f"{folder} is already a SavedModel export; export a run folder instead")
        destination = out if (target, fold) == ("model", "model") else os.path.join(out, target, fold)
        written.append(export_model(loaded.model, destination))
    return written
