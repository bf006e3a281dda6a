"""The `msir` command's flags: their types, the groups commands share, and the ExperimentConfig they make.

Every default a flag shows is read from the library (the config, its
recipes, the extractors' settings), never typed here again; a flag whose
value is None keeps the config's.
"""

from __future__ import annotations

import argparse

from msir_keras.features.base import ConfigError
from msir_keras.limits import check_limit, describe_limit

RUN_RECIPE = "small-data"  # `msir run`'s training settings; train and tune start from the paper's
RUN_MODEL = "fusion"  # `msir run`'s detector: MSIR late-fused with functionals (msir_keras.fusion)


def limited(name, flag):
    """An argparse type that checks a flag against its setting's allowed range (msir_keras.limits)."""

    def parse(text):
        try:
            return check_limit(name, text, flag)
        except ConfigError as error:  # argparse names the flag itself
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag} ")) from None

    parse.__name__ = describe_limit(name)  # argparse names the type in its messages
    return parse


def workers(text):
    """--workers: 'auto' or a count of processes >= 0."""
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 0, got {text!r}")
    return count


def zetas(text):
    """--zetas: comma-separated weightings in [0, 1], or none (no Fig. 5)."""
    if text.strip().lower() in ("", "none", "off"):
        return ()
    limit = limited("zeta", "--zetas")
    return tuple(limit(v) for v in text.split(","))


def wav2vec2_source(text):
    """--wav2vec2: a hub id or folder; 'off' (or 'none') is None, the wav2vec branch left out."""
    return None if text is None or text.lower() in ("off", "none") else text


def upstream_layer(text):
    """--upstream-layer: a hidden state's index (0: the CNN's projection, -1: the last block) or "all"."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--upstream-layer: {text!r} is neither a hidden state's index nor 'all'") from None


UPSTREAM_HELP = ("the third branch's self-supervised upstream: a hub id or local checkpoint folder of wav2vec 2.0, "
                 "HuBERT, WavLM, data2vec-audio or Whisper (its encoder), recognised from its config.json; "
                 "'off' leaves the branch out")
UPSTREAM_LAYER_HELP = ("the upstream's hidden state: an index (0: its CNN's projection, -1: the last block), or "
                       "'all': every hidden state, mixed by a learned weighted sum (SUPERB)")


def branches(text):
    """--branches: a comma list of MSIR's branches."""
    from msir_keras.config import ALL_BRANCHES

    names = tuple(b.strip() for b in text.split(","))
    unknown = [b for b in names if b not in ALL_BRANCHES]
    if unknown:
        raise ValueError(f"--branches: unknown {unknown}; choose from {','.join(ALL_BRANCHES)}")
    return names


def corpus_arguments(parser, required=True):
    from msir_keras.corpora import CORPORA

    parser.add_argument("--corpus", required=required, choices=sorted(CORPORA))
    parser.add_argument(
        "--root", required=required,
        help="the corpus folder (EmoDB: the folder holding wav/; IEMOCAP: IEMOCAP_full_release), "
        "or the manifest CSV",
    )


def feature_arguments(parser):
    """`msir extract`'s feature settings, with the defaults an experiment extracts with."""
    from msir_keras.config import ExperimentConfig
    from msir_keras.features import DEFAULT_CHECKPOINT, LLDConfig, LogMelConfig

    parser.add_argument("--store", default=ExperimentConfig().store, help="feature cache folder (default: %(default)s)")
    parser.add_argument("--upstream", "--wav2vec2", dest="wav2vec2", default=DEFAULT_CHECKPOINT, metavar="SOURCE",
                        help=UPSTREAM_HELP + " (default: %(default)s)")
    parser.add_argument("--upstream-layer", "--wav2vec2-layer", dest="wav2vec2_layer", type=upstream_layer,
                        default=None, metavar="N|all", help=UPSTREAM_LAYER_HELP + " (default: the last)")
    parser.add_argument("--logmel-deltas", type=int, default=LogMelConfig().deltas, choices=[0, 1, 2],
                        help="1: 2D log-Mels (paper), 2: 3D (ACRNN) (default: %(default)s)")
    parser.add_argument("--lld-deltas", type=int, default=LLDConfig().deltas, choices=[0, 1, 2],
                        help="2: 3D-LLD (paper), 1: 2D, 0: 1D (default: %(default)s)")


# Older names that keep working.
ALIASES = {"--upstream-layer": ("--wav2vec2-layer",)}


def dest(flag):
    """The attribute argparse stores a flag's value under."""
    return flag.lstrip("-").replace("-", "_")


def config_flags(training=True):
    """Flags that set an ExperimentConfig field as they are: (flag, field, argparse options).

    Their defaults and choices come from the config and its registries; a
    flag left out keeps the config's value (the defaults, or --config FILE's).
    Flags that set a field through a conversion (--wav2vec2, --branches,
    --dropout ...) are added by `add_config_flags` and read by `experiment_config`.
    """
    from msir_keras import config as c

    flags = [
        ("--emotions", "emotions", dict(choices=c.EMOTIONS,
                                        help="the classes: angry, happy, neutral, sad; or every label of the corpus")),
        ("--preset", "preset", dict(choices=c.PRESETS)),
        ("--epochs", "epochs", dict(type=limited("epochs", "--epochs"))),
        ("--patience", "patience", dict(type=limited("patience", "--patience"),
                                        help="epochs without a better val_uar")),
        ("--learning-rate", "learning_rate", dict(type=limited("learning_rate", "--learning-rate"))),
        ("--batch-size", "batch_size", dict(type=limited("batch_size", "--batch-size"),
                                            help="per replica under --strategy mirrored")),
        ("--seed", "seed", dict(type=limited("seed", "--seed"))),
        ("--ensemble", "ensemble", dict(type=limited("ensemble", "--ensemble"),
                                        help="models per fold from seeds seed, seed+1, ..., their probabilities "
                                        "averaged (N times the training and prediction time)")),
        ("--folds", "n_folds", dict(type=limited("n_folds", "--folds"), help="leave-speakers-out folds")),
        ("--max-folds", "max_folds", dict(type=limited("max_folds", "--max-folds"),
                                          help="run only the first N folds of the split",
                                          default_text="all")),
        ("--store", "store", dict(help="feature cache folder")),
        ("--upstream-layer", "wav2vec2_layer", dict(type=upstream_layer, help=UPSTREAM_LAYER_HELP,
                                                    metavar="N|all", default_text="the last")),
        ("--strategy", "strategy", dict(choices=c.STRATEGIES, help="mirrored: data parallel over every local "
                                         "device (TensorFlow: MirroredStrategy; JAX: keras.distribution."
                                         "DataParallel)")),
        ("--precision", "precision", dict(choices=c.PRECISIONS, help="mixed_float16 on GPUs")),
        ("--jit-compile", "jit_compile", dict(action="store_const", const=True, help="XLA")),
        ("--tensorboard", "tensorboard", dict(action="store_const", const=True,
                                              help="TensorBoard logs per fold and trial in the run folder")),
        ("--no-savedmodel", "savedmodel", dict(action="store_const", const=False,
                                               help="no TensorFlow SavedModel (serving/) beside each fold's "
                                               "model.keras; prediction then loads model.keras",
                                               default_text="written")),
    ]
    if training:
        flags += [
            ("--task", "task", dict(choices=c.TASKS)),
            ("--model", "model", dict(choices=c.MODELS)),
            ("--loss", "loss", dict(choices=c.LOSSES)),
            ("--zeta", "zeta", dict(type=limited("zeta", "--zeta"), help="focal weighting",
                                    default_text="the paper's per emotion for detection, "
                                    f"{c.ZETA} otherwise")),
            ("--theta", "theta", dict(type=limited("theta", "--theta"), help="focal focusing factor")),
            ("--split", "split", dict(choices=c.SPLITS)),
            ("--validation", "validation", dict(type=limited("validation", "--validation"),
                                                help="share of the training part held out for validation")),
            ("--validation-by", "validation_by", dict(choices=c.VALIDATION_BY)),
            ("--tuner", "tuner", dict(choices=c.TUNERS, help="keras-tuner search (with --tune/--space)")),
            ("--max-trials", "max_trials", dict(type=limited("max_trials", "--max-trials"),
                                                help="stop a search after this many trials",
                                                default_text="the whole grid")),
        ]
    return flags


RUN_OUT_HELP = ("run folder (default: runs/<corpus>-<model>)",
                "replace an existing run folder (kept until the new run has finished)")


def add_config_flags(parser, training=True, default_recipe="paper", exclude=(), out_help=RUN_OUT_HELP):
    """Adds the flags that make an ExperimentConfig; every default shown is `default_recipe`'s config's.

    `out_help`: the help of --out and --overwrite, for a command whose output is not one run folder.
    """
    from msir_keras.config import RECIPES, ExperimentConfig
    from msir_keras.features import LLDConfig, LogMelConfig

    defaults = ExperimentConfig().with_recipe(default_recipe)
    for flag, field, options in config_flags(training):
        if flag in exclude:
            continue
        options = dict(options)
        default = options.pop("default_text", getattr(defaults, field))
        options["help"] = (options.get("help", "") + f" (default: {default})").strip()
        parser.add_argument(flag, *ALIASES.get(flag, ()), dest=dest(flag), default=None, **options)
    parser.add_argument("--recipe", default=None, choices=list(RECIPES),
                        help="the training settings to start from; flags and --set change them (default: "
                        f"{default_recipe})")
    parser.add_argument("--upstream", "--wav2vec2", dest="wav2vec2", default=None, metavar="SOURCE",
                        help=UPSTREAM_HELP + f" (default: {defaults.wav2vec2})")
    parser.add_argument("--dropout", type=limited("dropout", "--dropout"), default=None,
                        help="dropout before the fully connected layers (default: the preset's)")
    parser.add_argument("--logmel-deltas", type=int, default=None, choices=[0, 1, 2],
                        help=f"1: 2D log-Mels (paper), 2: 3D (ACRNN) (default: {LogMelConfig().deltas})")
    parser.add_argument("--lld-deltas", type=int, default=None, choices=[0, 1, 2],
                        help=f"2: 3D-LLD (paper), 1: 2D, 0: 1D (default: {LLDConfig().deltas})")
    parser.add_argument("--out", default=None, help=out_help[0])
    parser.add_argument("--overwrite", action="store_true", help=out_help[1])
    parser.add_argument("--verbose", action="store_true", help="Keras's progress bar per epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config field or MSIR argument, e.g. --set weight_decay=1e-4")
    if training:
        parser.add_argument("--branches", default=None,
                            help="MSIR branches, comma-separated, of cr, lld, w2v, func (func: the eGeMAPS "
                            f"functionals branch, early fusion) (default: {','.join(defaults.branches)})")
        parser.add_argument("--emotion", action="append", choices=list(defaults.targets),
                            help=f"detection target (repeat; default: all four, {','.join(defaults.targets)})")
        parser.add_argument("--config", default=None, metavar="FILE",
                            help="start from this config.json (a run's): rerun it, or change it with flags")


def experiment_config(args, default_recipe="paper", **fixed):
    """The ExperimentConfig of a command: the defaults (or --config FILE) with --recipe, the flags given, --set, `fixed`.

    Without --config the command's `default_recipe` applies; with it, the
    file's settings stand unless --recipe is given.
    """
    from msir_keras.config import ExperimentConfig

    source = getattr(args, "config", None)
    base = ExperimentConfig.load(source) if source else ExperimentConfig()
    recipe = args.recipe or (None if source else default_recipe)
    if recipe is not None:
        base = base.with_recipe(recipe)
    values = base.to_dict()
    for flag, field, _ in config_flags(training=hasattr(args, "task")):
        value = getattr(args, dest(flag))
        if value is not None:
            values[field] = value
    if args.corpus is not None:
        values["corpus"] = args.corpus
    if args.root is not None:
        values["root"] = args.root
    if not source and (args.corpus is None or args.root is None):
        raise ConfigError("--corpus and --root are required (or --config RUN/config.json)")
    if args.wav2vec2 is not None:
        values["wav2vec2"] = wav2vec2_source(args.wav2vec2)
        if values["wav2vec2"] is not None and "w2v" not in values["branches"] and not getattr(args, "branches", None):
            values["branches"] = [*values["branches"], "w2v"]  # a checkpoint given: its branch joins the others
    if args.dropout is not None:
        values["model_options"] = {**values["model_options"], "dropout": args.dropout}
    for name, value in (("logmel", args.logmel_deltas), ("lld", args.lld_deltas)):
        if value is not None:
            values[name] = {**values[name], "deltas": value}
    if getattr(args, "branches", None):
        values["branches"] = branches(args.branches)
    if getattr(args, "emotion", None):
        values["targets"] = list(args.emotion)
    if getattr(args, "tune", None):
        values["tune"] = args.tune
    values.update(fixed)
    config = ExperimentConfig.from_dict(values)
    if getattr(args, "set", None):
        config = config.with_settings(args.set)
    return config
