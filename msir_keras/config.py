"""An experiment's configuration: plain data, written as config.json beside its results.

Light to import (no TensorFlow): the CLI takes its defaults and choices from here.
"""

from __future__ import annotations

import dataclasses
import json

from msir_keras.corpora import FOUR_CLASSES
from msir_keras.features import DEFAULT_CHECKPOINT, baseline_extractor, branch_extractors
from msir_keras.features.base import ConfigError
from msir_keras.features.upstream import check_layer
from msir_keras.features.store import atomic_write
from msir_keras.limits import check_limit
from msir_keras import presets
from msir_keras.presets import ALL_BRANCHES, BRANCH_INPUT, BRANCHES, MODEL_ARGUMENTS, THETA, ZETA

# The paper's best weighting factor per target emotion (Fig. 5, theta = 2).
PAPER_ZETA = {"happy": 0.75, "neutral": 0.75, "sad": 0.65, "angry": 0.25}
MODELS = ("msir", "fusion", "svm-compare", "svm-egemaps")
FUNCTIONALS = ("auto", "compare", "egemaps", "both")
TASKS = ("classification", "detection")
EMOTIONS = ("four", "all")  # the classes: angry, happy, neutral, sad; or every label of the corpus
SPLITS = ("speakers", "session", "loso")
PRESETS = tuple(presets.PRESETS)  # MSIR sizes; "tiny" is for tests of plumbing
LOSSES = ("focal", "crossentropy")
VALIDATION_BY = ("utterances", "speakers")
TUNERS = ("grid", "bayesian", "hyperband")
STRATEGIES = ("default", "mirrored")
PRECISIONS = ("float32", "mixed_float16")
SCHEDULES = ("constant", "cosine", "plateau")
CLASS_WEIGHTS = ("none", "balanced")

# Named training recipes (`--recipe`): the settings a run starts from.
# "paper": section 4.1 (Adam 1e-3, batch 64, up to 100 epochs), nothing added.
# "small-data": chosen by `msir tune` on the validation speakers of EmoDB's
# training folds only (tuning/README.md, "The small-data recipe").
RECIPES = {
    "paper": {"learning_rate": 1e-3, "batch_size": 64, "epochs": 100, "patience": 20, "label_smoothing": 0.0,
              "lr_schedule": "constant", "clipnorm": 0.0, "class_weights": "none", "speeds": (), "ensemble": 1},
    "small-data": {"learning_rate": 1e-3, "batch_size": 32, "epochs": 20, "patience": 8, "label_smoothing": 0.1,
                   "lr_schedule": "constant", "clipnorm": 0.0, "class_weights": "none", "speeds": (), "ensemble": 1,
                   "model_options": {"feature_masks": 2}},
}
# The MSIR arguments a recipe owns: switching recipes resets them to the model's defaults (off).
RECIPE_OPTIONS = ("time_masks", "time_mask_width", "feature_masks", "feature_mask_width")

@dataclasses.dataclass
class ExperimentConfig:
    """Everything an experiment runs with; written as config.json in its run folder.

    Args:
        corpus: "emodb", "iemocap" or "manifest".
        root: str. The corpus folder (or the manifest CSV).
        task: "classification" (one 4-way model) or "detection" (one
            positive-vs-rest detector per emotion in `targets`).
        targets: tuple of str. The emotions to detect (detection only).
        emotions: "four" (angry, happy, neutral, sad, the paper's classes)
            or "all" (every label the corpus has, e.g. EmoDB's seven;
            classification only, in alphabetical order).
        model: "msir", "fusion" (MSIR late-fused with a classifier on
            openSMILE functionals, `msir_keras.fusion`), "svm-compare" or
            "svm-egemaps".
        preset: "small", "paper" or "tiny" (MSIR sizes; `msir_keras.presets.PRESETS`).
        branches: tuple of "cr", "lld", "w2v", "func" (`ALL_BRANCHES`;
            default: the paper's three). "func" adds the functionals
            branch: early fusion with eGeMAPS functionals.
        model_options: dict. MSIR arguments over the preset.
        logmel, lld: dict. Extractor settings over the defaults (e.g.
            {"deltas": 2} for ACRNN's 3D log-Mels, {"deltas": 0} for 1D-LLD).
        wav2vec2: str or None. The third branch's upstream: a hub id or a
            local folder of any family in `msir_keras.features.FAMILIES`
            (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, Whisper's
            encoder); None turns the branch off.
        wav2vec2_layer: int, None or "all". Hidden state (None: the last;
            "all": every one, (T, layers + 1, hidden) features).
        loss: "focal" or "crossentropy".
        zeta: float, list or None. Focal weighting. None: for detection the
            paper's value per emotion (PAPER_ZETA) on the positive class;
            for classification `presets.ZETA` (0.25) on every class.
        theta: float, defaults to 2.
        learning_rate: float, defaults to 1e-3 (from the paper's grid).
        batch_size: int, defaults to 64. epochs: int, defaults to 100.
        patience: int, defaults to 20 epochs without a better val_uar.
        split: "speakers" (n_folds leave-speakers-out folds), "session"
            (IEMOCAP 1-4 / 5) or "loso".
        validation: float, defaults to 0.2. Share of the training part held out.
        validation_by: "utterances" or "speakers" (whole training speakers).
        seed: int. store: str, the feature store's folder.
        max_folds: int or None. Run only the first `max_folds` folds of the
            split (a quicker look; docs/results.md says which folds a figure used).
        tune: str or None. A keras-tuner search space (a name in
            `msir_keras.tuning.SPACES`, e.g. "paper-lr", or a JSON file):
            searched inside each fold on its validation part before training.
        tuner: "grid", "bayesian" or "hyperband". max_trials: int or None.
        strategy: "default" (one device) or "mirrored" (data parallel over
            every local device: `tf.distribute.MirroredStrategy` under
            TensorFlow, `keras.distribution.DataParallel` under JAX;
            batch_size is per device).
        precision: "float32" or "mixed_float16" (GPU; the softmax stays float32).
        jit_compile: bool. XLA-compile the training step.
        tensorboard: bool. TensorBoard logs per fold (and per trial) in the run folder.
        savedmodel: bool, defaults to True. Write a TensorFlow SavedModel
            (`serving/`) beside each fold's model.keras: `msir predict`
            loads it without tracing the model again (seconds faster in a
            new process). False saves the time it takes to write; the
            model.keras file serves prediction as well.
        speeds: tuple of float, defaults to () (off). Speed perturbation
            (MSIR): each training utterance is also played at these speeds
            (e.g. 0.9, 1.1), extracted once into the store and added to the
            fold's training part; validation and test utterances never are.
        label_smoothing: float, defaults to 0. Share of each label spread
            evenly over the classes (focal loss and cross-entropy).
        lr_schedule: "constant" (default), "cosine" (from the learning
            rate to 0 over `epochs`, per epoch) or "plateau" (halved after
            patience // 2 epochs without a better val_uar).
        clipnorm: float, defaults to 0 (off). Adam clips each gradient to this norm.
        class_weights: "none" (default) or "balanced" (each class weighted
            by N / (classes x its count) in the training part).
        ensemble: int, defaults to 1. Models per fold, trained from seeds
            seed, seed+1, ...; their class probabilities are averaged (one
            saved model; training and prediction cost this many times more).
        functionals: "auto" (default), "compare", "egemaps" or "both"
            (model "fusion"). The openSMILE functionals of the fused
            detector's classifier; "auto" chooses among the three by
            leave-one-speaker-out UAR on each fold's training speakers.
        fusion_weight: float in [0, 1] or None (default: chosen per fold on
            the training speakers' out-of-fold probabilities). MSIR's share
            of the fused probabilities (model "fusion").
        inner_folds: int, defaults to 2. Speaker groups of a fold's training
            speakers (model "fusion"): one MSIR model is trained per group
            held out, early-stopped on it, and the members are averaged.
        baselines: bool, defaults to False (`msir run`: True). Also train
            both SVM baselines on the same folds and report them beside the
            model (`baselines/` in the run folder).
        recipe: str, defaults to "paper". The named recipe (`RECIPES`) the
            training settings started from; a record, set by `with_recipe`.
    """

    corpus: str = "emodb"
    root: str = ""
    task: str = "classification"
    targets: tuple = FOUR_CLASSES
    emotions: str = "four"
    model: str = "msir"
    preset: str = "small"
    branches: tuple = BRANCHES
    model_options: dict = dataclasses.field(default_factory=dict)
    logmel: dict = dataclasses.field(default_factory=dict)
    lld: dict = dataclasses.field(default_factory=dict)
    wav2vec2: str | None = DEFAULT_CHECKPOINT
    wav2vec2_layer: int | str | None = None
    loss: str = "focal"
    zeta: float | list | None = None
    theta: float = THETA
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 100
    patience: int = 20
    split: str = "speakers"
    n_folds: int = 5
    validation: float = 0.2
    validation_by: str = "utterances"
    seed: int = 0
    store: str = "feature-store"
    max_folds: int | None = None
    tune: str | None = None
    tuner: str = "grid"
    max_trials: int | None = None
    strategy: str = "default"
    precision: str = "float32"
    jit_compile: bool = False
    tensorboard: bool = False
    savedmodel: bool = True
    speeds: tuple = ()
    label_smoothing: float = 0.0
    lr_schedule: str = "constant"
    clipnorm: float = 0.0
    class_weights: str = "none"
    ensemble: int = 1
    functionals: str = "auto"
    fusion_weight: float | None = None
    inner_folds: int = 2
    baselines: bool = False
    recipe: str = "paper"

    def __post_init__(self):
        self.targets = tuple(self.targets)
        self.branches = tuple(self.branches)
        if not isinstance(self.speeds, (list, tuple)) or not all(_is_number(f) for f in self.speeds):
            raise ConfigError(f"speeds: a list of factors, e.g. --set speeds=[0.9,1.1], got {self.speeds!r}")
        self.speeds = tuple(float(f) for f in self.speeds)
        for factor in self.speeds:
            if not 0.5 < factor < 2.0 or factor == 1.0:
                raise ConfigError(f"speeds: each factor must be in (0.5, 2) and not 1, got {factor}")
        if self.wav2vec2 is None:
            self.branches = tuple(b for b in self.branches if b != "w2v")
        check_layer(self.wav2vec2_layer, "wav2vec2_layer")
        unknown = [b for b in self.branches if b not in ALL_BRANCHES]
        if not self.branches or unknown:
            raise ConfigError(f"branches must be a non-empty subset of {ALL_BRANCHES}, got {self.branches}")
        self.branches = tuple(b for b in ALL_BRANCHES if b in self.branches)  # MSIR's order, whatever was given
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("emotions", self.emotions, EMOTIONS),
            ("model", self.model, MODELS),
            ("loss", self.loss, LOSSES),
            ("split", self.split, SPLITS),
            ("preset", self.preset, PRESETS),
            ("validation_by", self.validation_by, VALIDATION_BY),
            ("tuner", self.tuner, TUNERS),
            ("strategy", self.strategy, STRATEGIES),
            ("precision", self.precision, PRECISIONS),
            ("lr_schedule", self.lr_schedule, SCHEDULES),
            ("class_weights", self.class_weights, CLASS_WEIGHTS),
            ("recipe", self.recipe, tuple(RECIPES)),
            ("functionals", self.functionals, FUNCTIONALS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        fused_only = {"functionals": self.functionals != "auto", "fusion_weight": self.fusion_weight is not None,
                      "inner_folds": self.inner_folds != 2}
        if self.model != "fusion" and any(fused_only.values()):
            raise ConfigError(f"{', '.join(k for k, v in fused_only.items() if v)}: settings of --model fusion, "
                              f"not of --model {self.model}")
        if self.model == "fusion" and (self.tune or self.speeds or self.tensorboard):
            raise ConfigError("model fusion chooses its settings on held-out training speakers itself: it takes no "
                              "--tune, speeds or --tensorboard (use them with --model msir)")
        for name in ("savedmodel", "jit_compile", "tensorboard", "baselines"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("n_folds", "batch_size", "epochs", "patience", "validation", "learning_rate",
                     "theta", "seed", "label_smoothing", "clipnorm", "ensemble", "inner_folds"):
            setattr(self, name, check_limit(name, getattr(self, name)))
        zetas = [] if self.zeta is None else (self.zeta if isinstance(self.zeta, (list, tuple)) else [self.zeta])
        for value in zetas:
            check_limit("zeta", value)
        for name, value in self.model_options.items():
            _check_model_option(name, value)
        for name in ("dropout", "time_masks", "time_mask_width", "feature_masks", "feature_mask_width"):
            if name in self.model_options:
                check_limit(name, self.model_options[name])
        for name in ("max_folds", "max_trials", "fusion_weight"):
            if getattr(self, name) is not None:
                setattr(self, name, check_limit(name, getattr(self, name)))

    def to_dict(self):
        return dataclasses.asdict(self)

    def for_model(self, model):
        """A copy for another model on the same corpus and folds (a fused detector's MSIR members, a
        run's baselines): the fused detector's own settings and `baselines` back to their defaults."""
        return dataclasses.replace(self, model=model, functionals="auto", fusion_weight=None, inner_folds=2,
                                   baselines=False)

    def with_recipe(self, name):
        """A copy with a named recipe's training settings (`RECIPES`) and `recipe=name`.

        The recipe's MSIR arguments are merged into `model_options`, and
        the augmentation options it leaves out (`RECIPE_OPTIONS`) are
        removed: `--recipe paper` over a small-data config.json trains
        without masks. Every other setting (corpus, branches, features,
        dropout...) is kept.
        """
        if name not in RECIPES:
            raise ConfigError(f"recipe must be one of {tuple(RECIPES)}, got {name!r}")
        values = self.to_dict()
        recipe = dict(RECIPES[name])
        kept = {k: v for k, v in values["model_options"].items() if k not in RECIPE_OPTIONS}
        values["model_options"] = {**kept, **recipe.pop("model_options", {})}
        values.update(recipe, recipe=name)
        return type(self).from_dict(values)

    def with_settings(self, settings):
        """A copy with `key=value` settings applied (`msir train --set`).

        Keys are fields of this config, or MSIR arguments (dropout,
        weight_decay, cr_lstm_units, ...), which go into `model_options`.
        Values are read as JSON where they parse (numbers, true, null,
        lists), else as text.
        """
        values = self.to_dict()
        options = dict(values["model_options"])
        fields = {f.name for f in dataclasses.fields(self)}
        for setting in settings:
            key, separator, text = setting.partition("=")
            key = key.strip()
            if not separator or not key:
                raise ConfigError(f"--set takes key=value, got {setting!r}")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            if key.startswith("model_options."):
                options[key.split(".", 1)[1]] = value
            elif key in fields:
                values[key] = value
            elif key in MODEL_ARGUMENTS:
                options[key] = value
            else:
                raise ConfigError(f"--set {key}: not a setting; known: {sorted(fields)} and the MSIR "
                                  f"arguments {sorted(MODEL_ARGUMENTS)}")
        values["model_options"] = options
        return type(self).from_dict(values)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown experiment setting(s) {unknown}")
        return cls(**values)

    def save(self, path):
        """Writes config.json whole or not at all (a temporary file renamed into place)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False).encode()
        atomic_write(path, lambda stream: stream.write(text))

    @classmethod
    def load(cls, path):
        """Reads a config.json; a damaged file raises ConfigError naming it."""
        try:
            with open(path) as handle:
                values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); the file is "
                              "damaged (a run killed while writing it?): restore it or start the run anew "
                              "with --overwrite") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: not an experiment config (a JSON object of settings)")
        return cls.from_dict(values)

    def extractors(self):
        """The feature extractors of this experiment, by model input name."""
        if self.model.startswith("svm-"):
            name = self.model.split("-", 1)[1]
            return {name: baseline_extractor(name)}
        wav2vec2 = None
        if "w2v" in self.branches:
            wav2vec2 = {"source": self.wav2vec2, "layer": self.wav2vec2_layer}
        extractors = branch_extractors(self.logmel or None, self.lld or None, wav2vec2)
        extractors["egemaps"] = baseline_extractor("egemaps")  # the functionals branch's input
        inputs = {BRANCH_INPUT[b]: extractors[BRANCH_INPUT[b]] for b in self.branches}
        if self.model == "fusion":  # the functional sets the classifier may choose from, after MSIR's inputs
            sets = ("compare", "egemaps") if self.functionals in ("auto", "both") else (self.functionals,)
            inputs.update({name: baseline_extractor(name) for name in sets})
        return inputs

    def zeta_for(self, target):
        """The focal weighting of one target's loss (see `zeta`)."""
        if self.task == "detection":
            z = PAPER_ZETA.get(target, 0.5) if self.zeta is None else float(self.zeta)
            return [1.0 - z, z]
        return ZETA if self.zeta is None else self.zeta


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model_option(name, value):
    """An MSIR argument (`model_options`, `--set`) of the paper preset's kind: ConfigError naming it, before any work."""
    if name not in MODEL_ARGUMENTS:
        raise ConfigError(f"model_options: {name!r} is not an MSIR argument; known: {sorted(MODEL_ARGUMENTS)}")
    default = presets.PAPER[name]
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_number(v) and v > 0 for v in value)
        example = list(default)
    elif isinstance(default, bool):
        ok, example = isinstance(value, bool), "true"
    elif default is None:  # w2v_layers: set from the features, or a count
        ok, example = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0), 13
    else:
        ok, example = _is_number(value) and value >= 0, default
    if not ok:
        raise ConfigError(f"--set {name}: {value!r} is not a value of its kind; e.g. --set {name}="
                          + (json.dumps(example, separators=(",", ":")) if not isinstance(example, str) else example))
