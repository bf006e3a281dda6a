"""`Detector`: emotion probabilities from audio files, and emotion timelines of long recordings.

A Detector reads a run's or an export's models (`msir_keras.serving`),
extracts from audio exactly the features they were trained with, and
averages the fold models' probabilities.
"""

from __future__ import annotations

import json
import os

import numpy as np

from msir_keras.audio import SAMPLE_RATE, AudioError, read_audio
from msir_keras.features.base import nonfinite_problem, signal_problem
from msir_keras.serving import LoadedModel, model_features, model_folders, tensorflow_backend, to_numpy

# The defaults of the Python API and of `msir predict` alike.
THRESHOLD = 0.5  # a detector's decision: positive from this probability on
PREDICT_BATCH = 16  # files per forward pass
TIMELINE_WINDOW = 4.0  # seconds per timeline window
HOPS_PER_WINDOW = 4  # a timeline's windows start a quarter of a window apart unless a hop is given
TIMELINE_BATCH = 32  # timeline windows per forward pass


def _is_detection(names):
    """Whether a model's class names are a detector's: ["not-<emotion>", "<emotion>"]."""
    return len(names) == 2 and names[0].startswith("not-")


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
        threshold: float, defaults to `THRESHOLD` (0.5). Detection decisions.
        wav2vec2: str or None. Another location of the wav2vec 2.0 checkpoint
            the model was trained with (the same weights are checked).

    Example:
    >>> detector = Detector("runs/emodb")  # doctest: +SKIP
    >>> detector.predict(["speech.wav"])  # doctest: +SKIP
    """

    def __init__(self, path, fold=None, threshold=THRESHOLD, wav2vec2=None):
        folders = model_folders(path)
        if fold is not None:
            folders = {key: f for key, f in folders.items() if key[1] == fold}
            if not folders:
                raise ValueError(f"{path}: no fold named {fold!r}")
        self.models = {key: LoadedModel(folder) for key, folder in folders.items()}
        self.threshold = threshold
        self.feature_config, self.input_shapes, self.extractors = model_features(self.models, path, wav2vec2)
        self.targets = sorted({key[0] for key in self.models})
        self.class_names = {
            target: next(m for (t, _), m in self.models.items() if t == target).class_names
            for target in self.targets
        }
        self._forward = None

    @property
    def min_window(self):
        """The shortest timeline window, in seconds: one frame of every input (and `read_audio`'s 25 ms)."""
        return max([0.025] + [e.frame_step for e in self.extractors.values() if e.frame_step is not None])

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
        from msir_keras.batches import pad_batch

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
            if _is_detection(names):
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

    def extract(self, signals):
        """The model's features of decoded signals, each checked for NaN or infinity.

        The one feature path of `predict` and of `msir serve`'s requests.

        Args:
            signals: list of float32 mono 16 kHz arrays (`read_audio`'s).

        Returns:
            A list, one entry per signal: ({input name: (T, ...) array}, None),
            or (None, reason) when the samples are far outside [-1, 1] (a
            float file on another scale) or a feature holds NaN or infinity
            (a file too short or damaged for these features); reason is one line.
        """
        refused = {position: reason for position, signal in enumerate(signals)
                   if (reason := signal_problem(signal)) is not None}
        kept = [signal for position, signal in enumerate(signals) if position not in refused]
        arrays = {name: iter(extractor.extract_many(kept)) for name, extractor in self.extractors.items()}
        results = []
        for position, signal in enumerate(signals):
            if position in refused:
                results.append((None, refused[position]))
                continue
            entry = {name: next(values) for name, values in arrays.items()}
            problem = next((f"{name} {reason}" for name, value in entry.items()
                            if (reason := nonfinite_problem(np.asarray(value))) is not None), None)
            if problem is None:
                results.append((entry, None))
            else:
                results.append((None, f"{problem} from {len(signal) / SAMPLE_RATE * 1000:.0f} ms of audio; "
                                      "the file is too short or damaged for these features"))
        return results

    def score(self, features):
        """One forward pass over extracted features: each input's row, or why it has none.

        The one scoring path of `predict` and of `msir serve`'s batches (a
        batch padded to its longest input: the models mask the padding).

        Args:
            features: list of {input name: (T, ...) array}, as `extract` gives.

        Returns:
            A list, one entry per input: a dict of per-emotion probabilities
            (`p_<class>`) and decisions (`<class>`, and `predicted` for a
            classifier), or a one-line reason string when the model gave NaN
            or infinite probabilities.
        """
        from msir_keras.batches import pad_batch

        probabilities = self.probabilities(
            {name: pad_batch([entry[name] for entry in features]) for name in self.extractors})
        finite = np.all([np.isfinite(v).all(axis=-1) for v in probabilities.values()], axis=0)
        results = ["the model gave NaN or infinite probabilities for this file; nothing is reported for it"
                   if not ok else {} for ok in finite]
        good = np.flatnonzero(finite)
        self._rows({t: v[good] for t, v in probabilities.items()}, [results[g] for g in good])
        return results

    def predict(self, paths, batch_size=PREDICT_BATCH, errors="raise", warn=None):
        """A DataFrame: one row per file, per emotion its probability and decision.

        Files are read and predicted in batches of similar length.

        Args:
            paths: list of str. Audio files.
            batch_size: int, defaults to `PREDICT_BATCH` (16). Files per forward pass.
            errors: "raise" (the first bad file raises AudioError) or
                "collect": a bad file gets a row with its reason in an
                `error` column, and the other files are still predicted.
            warn: callable(str) or None. Told of suspicious audio (truncated,
                digital silence); None leaves the warnings to Python's
                `warnings` module.
        """
        import pandas as pd
        import soundfile

        paths = [str(path) for path in paths]

        def frames(path):
            try:
                return soundfile.info(path).frames
            except Exception:
                return 0  # read_audio names the problem below

        def fail(index, reason):
            if errors == "raise":
                raise AudioError(paths[index], reason)
            rows[index]["error"] = reason

        order = sorted(range(len(paths)), key=lambda i: frames(paths[i]))
        rows = [{"path": path} for path in paths]
        for start in range(0, len(order), batch_size):
            chunk, signals = [], []
            for index in order[start : start + batch_size]:
                try:
                    signal = read_audio(paths[index], warn=None if warn is None else lambda w: warn(str(w)))
                except AudioError as error:
                    fail(index, error.reason)
                    continue
                chunk.append(index)
                signals.append(signal)
            if not chunk:
                continue
            kept, features = [], []
            for index, (entry, reason) in zip(chunk, self.extract(signals)):
                if reason is None:
                    kept.append(index)
                    features.append(entry)
                else:
                    fail(index, reason)
            if not kept:
                continue
            for index, result in zip(kept, self.score(features)):
                if isinstance(result, str):
                    fail(index, result)
                else:
                    rows[index].update(result)
        table = pd.DataFrame(rows)
        if "error" in table:
            table = table[[c for c in table.columns if c != "error"] + ["error"]]
        return table

    def timeline(self, path, window=TIMELINE_WINDOW, hop=None, batch_size=TIMELINE_BATCH):
        """Emotion probabilities over a long recording, one row per window.

        Features whose frames depend only on their neighbourhood (log-Mels,
        LLDs) are computed once for the whole file and sliced into windows;
        wav2vec 2.0 features (attention over the whole input) and a fused
        model's utterance-level functionals are computed per window, in
        batches. Memory grows with the file's length only through those
        whole-file features (about 0.7 MB per minute for log-Mels and
        3D-LLDs); windows are cut and predicted `batch_size` at a time.

        Args:
            path: str. An audio file of any length.
            window: float, defaults to `TIMELINE_WINDOW` (4.0). Window length in seconds.
            hop: float or None. Seconds between window starts; None: a
                quarter of `window` (`HOPS_PER_WINDOW`), 1.0 for 4 s windows.
            batch_size: int, defaults to `TIMELINE_BATCH` (32). Windows per forward pass.

        Returns:
            A DataFrame: start, end (seconds), and per emotion its
            probability (and decision), one row per window.
        """
        hop = window / HOPS_PER_WINDOW if hop is None else hop
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive seconds, got {window} and {hop}")
        return self.signal_timeline(read_audio(path), path, window=window, hop=hop, batch_size=batch_size)

    def signal_timeline(self, signal, path, window=TIMELINE_WINDOW, hop=None, batch_size=TIMELINE_BATCH,
                        forward=None):
        """`timeline` of a decoded signal: the one timeline path of `msir predict --window` and `msir serve`.

        Args:
            signal: float32 mono 16 kHz array (`read_audio`'s).
            path: str. What error messages call the recording.
            window, hop, batch_size: as `timeline`.
            forward: callable({input name: padded batch}) -> {target: (B, C)}
                or None (`probabilities`). A server passes one that runs the
                models on its model thread, and raises to stop a timeline
                whose client left.

        Returns:
            The DataFrame `timeline` returns.

        Raises:
            AudioError: a whole-file feature or a window's probabilities hold NaN or infinity.
            ValueError: `window` under `min_window`, or `hop` not positive.
        """
        import pandas as pd

        from msir_keras.batches import pad_batch

        hop = window / HOPS_PER_WINDOW if hop is None else hop
        if window < self.min_window or hop <= 0:
            raise ValueError(f"window must be at least {self.min_window:g} s (one frame of every input) and hop "
                             f"positive, got {window:g} and {hop:g}")
        problem = signal_problem(signal)
        if problem is not None:
            raise AudioError(path, f"{problem}; no timeline is written")
        forward = self.probabilities if forward is None else forward
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
            probabilities = forward(inputs)
            for values in probabilities.values():
                bad = np.flatnonzero(~np.isfinite(values).all(axis=-1))
                if len(bad):
                    raise AudioError(path, f"the model gave NaN or infinite probabilities for "
                                           f"{len(bad)} window(s) from {batch[bad[0]]:g} s; no timeline is written")
            rows += self._rows(probabilities, batch_rows)
        return pd.DataFrame(rows)

    def write_timeline(self, path, out, window=TIMELINE_WINDOW, hop=None, batch_size=TIMELINE_BATCH):
        """Writes one file's `timeline` as `<out>/<name>.timeline.csv`, `.json` and `.png` (`msir predict --window`).

        Args:
            path: str. An audio file of any length.
            out: str. The folder, created if needed.
            window, hop, batch_size: as `timeline`.

        Returns:
            (table, stem): the timeline, and the path its three files share, less the suffix.
        """
        from msir_keras.plots import plot_timeline

        hop = window / HOPS_PER_WINDOW if hop is None else hop
        table = self.timeline(path, window=window, hop=hop, batch_size=batch_size)
        os.makedirs(out, exist_ok=True)
        stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".timeline")
        table.to_csv(stem + ".csv", index=False, float_format="%.4f")
        with open(stem + ".json", "w") as handle:
            json.dump({"path": path, "window": window, "hop": hop, "windows": table.to_dict(orient="records")},
                      handle, indent=1, allow_nan=False)
        detection = any(_is_detection(names) for names in self.class_names.values())
        plot_timeline(table, stem + ".png", threshold=self.threshold if detection else None,
                      title=f"{os.path.basename(path)}: {window:g} s windows every {hop:g} s")
        return table, stem
