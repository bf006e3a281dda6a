"""The `msir` command: inspect, extract, run, train, evaluate, export, predict."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import warnings

from msir_keras.features.base import ConfigError
from msir_keras.limits import check_limit, describe_limit

RUN_RECIPE = "small-data"  # `msir run`'s training settings; train and tune start from the paper's
RUN_MODEL = "fusion"  # `msir run`'s detector: MSIR late-fused with functionals (msir_keras.fusion)

DEFAULT_STORE = "feature-store"


def _limited(name, flag):
    """An argparse type that checks a flag against its setting's allowed range (msir_keras.limits)."""

    def parse(text):
        try:
            return check_limit(name, text, flag)
        except ConfigError as error:  # argparse names the flag itself
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag} ")) from None

    parse.__name__ = describe_limit(name)  # argparse names the type in its messages
    return parse


def _workers(text):
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 0, got {text!r}")
    return count


def _quiet_tensorflow():
    # The CLI (not the library) silences TensorFlow's start-up notices.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# TensorFlow's C++ start-up lines that TF_CPP_MIN_LOG_LEVEL does not reach: absl's
# pre-initialisation notices and the CUDA probes of a machine without a GPU.
_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda_(dnn|blas|fft)|Unable to register"
)
TENSORFLOW_COMMANDS = ("run", "train", "tune", "evaluate", "export", "predict")


def _import_tensorflow_quietly():
    """Imports TensorFlow (and probes its devices) with those lines filtered out of stderr."""
    if "tensorflow" in sys.modules:
        return
    # Under JAX or PyTorch too, where TensorFlow is installed: Keras imports it (to seed it) all the same.
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints here, once
        except ImportError:
            pass  # no TensorFlow: Keras says which backend it needs when it is imported
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not _STARTUP_NOISE.search(line):
                print(line, file=sys.stderr)


def _wav2vec2_source(text):
    return None if text is None or text.lower() in ("off", "none") else text


def _corpus_arguments(parser, required=True):
    parser.add_argument("--corpus", required=required, choices=["emodb", "iemocap", "manifest"])
    parser.add_argument(
        "--root", required=required,
        help="the corpus folder (EmoDB: the folder holding wav/; IEMOCAP: IEMOCAP_full_release), "
        "or the manifest CSV",
    )


def _feature_arguments(parser, wav2vec2_default):
    parser.add_argument("--store", default=DEFAULT_STORE, help="feature cache folder (default: %(default)s)")
    parser.add_argument(
        "--wav2vec2", default=wav2vec2_default,
        help="wav2vec 2.0 hub id or local checkpoint folder; 'off' leaves the wav2vec branch out "
        "(default: %(default)s)",
    )
    parser.add_argument("--wav2vec2-layer", type=int, default=None, help="hidden layer (default: last)")
    parser.add_argument("--logmel-deltas", type=int, default=1, choices=[0, 1, 2],
                        help="1: 2D log-Mels (paper), 2: 3D (ACRNN)")
    parser.add_argument("--lld-deltas", type=int, default=2, choices=[0, 1, 2],
                        help="2: 3D-LLD (paper), 1: 2D, 0: 1D")


def cmd_inspect(args):
    from msir_keras.corpora import load_corpus

    corpus = load_corpus(args.corpus, args.root, emotions=args.emotions)
    counts = corpus.counts()
    if args.csv:
        corpus.utterances.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    print(f"{counts['corpus']}: {counts['total']} utterances")
    for key in ("by_label", "by_session", "by_speaker"):
        if counts[key]:
            print(f"  {key[3:]:<8} " + ", ".join(f"{k} {v}" for k, v in counts[key].items()))
    if counts["skipped"]:
        print(f"  skipped {len(counts['skipped'])}:")
        for entry in counts["skipped"][: args.show_skipped]:
            print(f"    {entry['where']}: {entry['reason']}")
        if len(counts["skipped"]) > args.show_skipped:
            print(f"    ... {len(counts['skipped']) - args.show_skipped} more (--json lists all)")
    for warning in counts["warnings"]:
        print(f"WARNING: {warning}")
    if args.csv:
        print(f"utterance table written to {args.csv}")
    return 0


def cmd_extract(args):
    from msir_keras.corpora import load_corpus
    from msir_keras.features import FeatureStore, baseline_extractor, branch_extractors, parse_shard

    wanted = [name.strip() for name in args.features.split(",") if name.strip()]
    corpus = load_corpus(args.corpus, args.root, emotions=args.emotions)
    for warning in corpus.warnings:
        print(f"WARNING: {warning}")
    source = _wav2vec2_source(args.wav2vec2)
    if "w2v" in wanted and source is None:
        wanted.remove("w2v")
        print("wav2vec2 off: no wav2vec 2.0 features extracted")
    branch = branch_extractors(
        {"deltas": args.logmel_deltas}, {"deltas": args.lld_deltas},
        {"source": source, "layer": args.wav2vec2_layer} if "w2v" in wanted else None,
    )
    extractors = []
    for name in wanted:
        if name in branch:
            extractors.append(branch[name])
        elif name in ("compare", "egemaps"):
            extractors.append(baseline_extractor(name))
        else:
            raise ValueError(f"--features: unknown {name!r}; choose from logmel,lld,w2v,compare,egemaps")
    if "w2v" in wanted:
        branch["w2v"].batch_size = args.batch_size
        branch["w2v"].key()  # resolves the checkpoint now: fail before any work
    shard = parse_shard(args.shard) if args.shard else None
    paths = corpus.utterances["path"].tolist()
    print(f"{corpus.name}: {len(paths)} files, features {', '.join(e.name for e in extractors)} "
          f"-> {args.store}" + (f" (shard {args.shard})" if shard else ""))
    summary = FeatureStore(args.store).extract(paths, extractors, shard=shard, progress=True, workers=args.workers,
                                               verify=True)
    print(summary)
    return 1 if summary.failed and not (summary.computed or summary.cached) else 0


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def _config_flags(training=True):
    """Flags that set an ExperimentConfig field: (flag, field, argparse options).

    Their defaults and choices come from the config and its registries; a
    flag left out keeps the config's value (the defaults, or --config FILE's).
    """
    from msir_keras import config as c

    flags = [
        ("--emotions", "emotions", dict(choices=c.EMOTIONS,
                                        help="the classes: angry, happy, neutral, sad; or every label of the corpus")),
        ("--preset", "preset", dict(choices=c.PRESETS)),
        ("--epochs", "epochs", dict(type=_limited("epochs", "--epochs"))),
        ("--patience", "patience", dict(type=_limited("patience", "--patience"),
                                        help="epochs without a better val_uar")),
        ("--learning-rate", "learning_rate", dict(type=_limited("learning_rate", "--learning-rate"))),
        ("--batch-size", "batch_size", dict(type=_limited("batch_size", "--batch-size"),
                                            help="per replica under --strategy mirrored")),
        ("--seed", "seed", dict(type=_limited("seed", "--seed"))),
        ("--ensemble", "ensemble", dict(type=_limited("ensemble", "--ensemble"),
                                        help="models per fold from seeds seed, seed+1, ..., their probabilities "
                                        "averaged (N times the training and prediction time)")),
        ("--folds", "n_folds", dict(type=_limited("n_folds", "--folds"), help="leave-speakers-out folds")),
        ("--max-folds", "max_folds", dict(type=_limited("max_folds", "--max-folds"),
                                          help="run only the first N folds of the split",
                                          default_text="all")),
        ("--store", "store", dict(help="feature cache folder")),
        ("--wav2vec2-layer", "wav2vec2_layer", dict(type=int, help="hidden layer", default_text="the last")),
        ("--strategy", "strategy", dict(choices=c.STRATEGIES, help="mirrored: every local GPU")),
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
            ("--zeta", "zeta", dict(type=_limited("zeta", "--zeta"), help="focal weighting",
                                    default_text="the paper's per emotion for detection, 0.25 otherwise")),
            ("--theta", "theta", dict(type=_limited("theta", "--theta"), help="focal focusing factor")),
            ("--split", "split", dict(choices=c.SPLITS)),
            ("--validation", "validation", dict(type=_limited("validation", "--validation"),
                                                help="share of the training part held out for validation")),
            ("--validation-by", "validation_by", dict(choices=c.VALIDATION_BY)),
            ("--tuner", "tuner", dict(choices=c.TUNERS, help="keras-tuner search (with --tune/--space)")),
            ("--max-trials", "max_trials", dict(type=_limited("max_trials", "--max-trials"),
                                                help="stop a search after this many trials",
                                                default_text="the whole grid")),
        ]
    return flags


def _add_config_flags(parser, training=True, default_recipe="paper", exclude=()):
    from msir_keras.config import RECIPES, ExperimentConfig

    defaults = ExperimentConfig().with_recipe(default_recipe)
    for flag, field, options in _config_flags(training):
        if flag in exclude:
            continue
        options = dict(options)
        default = options.pop("default_text", getattr(defaults, field))
        options["help"] = (options.get("help", "") + f" (default: {default})").strip()
        parser.add_argument(flag, default=None, **options)
    parser.add_argument("--recipe", default=None, choices=list(RECIPES),
                        help="the training settings to start from; flags and --set change them (default: "
                        f"{default_recipe})")
    parser.add_argument("--wav2vec2", default=None,
                        help="wav2vec 2.0 hub id or local checkpoint folder; 'off' leaves the wav2vec branch "
                        f"out (default: {defaults.wav2vec2})")
    parser.add_argument("--dropout", type=_limited("dropout", "--dropout"), default=None,
                        help="dropout before the fully connected layers (default: the preset's)")
    parser.add_argument("--logmel-deltas", type=int, default=None, choices=[0, 1, 2],
                        help="1: 2D log-Mels (paper, default), 2: 3D (ACRNN)")
    parser.add_argument("--lld-deltas", type=int, default=None, choices=[0, 1, 2],
                        help="2: 3D-LLD (paper, default), 1: 2D, 0: 1D")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<corpus>-<model>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run folder (kept until the new run has finished)")
    parser.add_argument("--verbose", action="store_true", help="Keras's progress bar per epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config field or MSIR argument, e.g. --set weight_decay=1e-4")
    if training:
        parser.add_argument("--branches", default=None,
                            help="MSIR branches, comma-separated, of cr, lld, w2v, func (func: the eGeMAPS "
                            f"functionals branch, early fusion) (default: {','.join(defaults.branches)})")
        parser.add_argument("--emotion", action="append", choices=list(defaults.targets),
                            help="detection target (repeat; default: all four)")
        parser.add_argument("--config", default=None, metavar="FILE",
                            help="start from this config.json (a run's): rerun it, or change it with flags")


def _experiment_config(args, default_recipe="paper", **fixed):
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
    for flag, field, _ in _config_flags(training=hasattr(args, "task")):
        value = getattr(args, _dest(flag))
        if value is not None:
            values[field] = value
    if args.corpus is not None:
        values["corpus"] = args.corpus
    if args.root is not None:
        values["root"] = args.root
    if not source and (args.corpus is None or args.root is None):
        raise ConfigError("--corpus and --root are required (or --config RUN/config.json)")
    if args.wav2vec2 is not None:
        values["wav2vec2"] = _wav2vec2_source(args.wav2vec2)
        if values["wav2vec2"] is not None and "w2v" not in values["branches"] and not getattr(args, "branches", None):
            values["branches"] = [*values["branches"], "w2v"]  # a checkpoint given: its branch joins the others
    if args.dropout is not None:
        values["model_options"] = {**values["model_options"], "dropout": args.dropout}
    for name, value in (("logmel", args.logmel_deltas), ("lld", args.lld_deltas)):
        if value is not None:
            values[name] = {**values[name], "deltas": value}
    if getattr(args, "branches", None):
        values["branches"] = _branches(args.branches)
    if getattr(args, "emotion", None):
        values["targets"] = list(args.emotion)
    if getattr(args, "tune", None):
        values["tune"] = args.tune
    values.update(fixed)
    config = ExperimentConfig.from_dict(values)
    if getattr(args, "set", None):
        config = config.with_settings(args.set)
    return config


def _branches(text):
    from msir_keras.config import ALL_BRANCHES

    branches = tuple(b.strip() for b in text.split(","))
    unknown = [b for b in branches if b not in ALL_BRANCHES]
    if unknown:
        raise ValueError(f"--branches: unknown {unknown}; choose from {','.join(ALL_BRANCHES)}")
    return branches


def _announce_wav2vec2(config):
    """Says first, before TensorFlow prints anything, when MSIR runs without its wav2vec branch."""
    if config.model in ("msir", "fusion") and config.wav2vec2 is None:
        inputs = {"cr": "log-Mels", "lld": "LLDs", "func": "eGeMAPS functionals"}
        used = " and ".join(inputs[b] for b in config.branches if b in inputs)
        print(f"NOTE: wav2vec branch OFF (--wav2vec2 off): MSIR runs on {used} only; "
              "give a wav2vec 2.0 checkpoint folder with --wav2vec2 FOLDER for the full model",
              flush=True)


def _run(config, args):
    from msir_keras.experiment import check_run_folder, run_experiment

    check_run_folder(config, args.out, args.overwrite)  # before any work
    if config.model in ("msir", "fusion") and "w2v" in config.branches:
        config.extractors()["w2v"].key()  # fail at once on an unreachable checkpoint
    run_experiment(config, args.out, overwrite=args.overwrite, verbose=1 if args.verbose and sys.stdout.isatty() else
                   (2 if args.verbose else 0))
    print(f"run folder: {args.out}")
    return 0


def cmd_run(args):
    config = _experiment_config(args, default_recipe=RUN_RECIPE, split="speakers", task="classification",
                                model=args.model or RUN_MODEL, baselines=not args.no_baselines)
    _announce_wav2vec2(config)
    return _run(config, args)


def cmd_train(args):
    config = _experiment_config(args)
    _announce_wav2vec2(config)
    if config.tune:
        from msir_keras.tuning import cluster_role, load_space

        load_space(config.tune)  # a bad space fails before any work
        if cluster_role() is not None:
            raise ValueError("keras-tuner's chief/worker mode (KERASTUNER_* variables) runs under `msir tune` "
                             "on the chief and on every worker; `msir train --tune` searches in this process alone")
    return _run(config, args)


def cmd_tune(args):
    config = _experiment_config(args, tune=args.space)
    if config.model != "msir":
        raise ValueError(f"msir tune searches MSIR's hyperparameters; --model {config.model} has none to search")
    _announce_wav2vec2(config)
    from msir_keras.experiment import run_search
    from msir_keras.tuning import cluster_role, load_space

    load_space(config.tune)
    role = cluster_role()  # checks the KERASTUNER_* variables before any work
    if args.overwrite and role == "worker":
        raise ValueError("--overwrite on a keras-tuner worker: the search folder is the chief's; "
                         "pass --overwrite on the chief only")
    if args.overwrite and os.path.isdir(args.out):
        import shutil

        shutil.rmtree(args.out)  # without --overwrite, a search resumes where it stopped
    run_search(config, args.out)
    print(f"search folder: {args.out}" if role != "worker" else f"worker done; the chief writes {args.out}")
    return 0


def cmd_evaluate(args):
    from msir_keras.evaluate import evaluate_run

    evaluate_run(args.run_dir, corpus=args.corpus, root=args.root, store=args.store, out=args.out)
    return 0


def cmd_compare(args):
    from msir_keras.compare import compare_markdown, compare_runs, is_search_folder, markdown, search_summary

    if len(args.runs) == 1 and is_search_folder(args.runs[0]):
        table = search_summary(args.runs[0])  # a `msir tune` folder: its combinations over the folds
        text = markdown(table.drop(columns="target") if table["target"].nunique() == 1 else table)
    else:
        names = args.names.split(",") if args.names else None
        table = compare_runs(args.runs, names, args.figure, ensemble=args.ensemble)
        text = compare_markdown(table)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.out.endswith(".csv"):
            table.to_csv(args.out, float_format="%.4f")
        else:
            with open(args.out, "w") as handle:
                handle.write(text + "\n")
        print(f"written to {args.out}")
    return 0


def cmd_reproduce(args):
    from msir_keras.reproduce import PAPER_ZETAS, load_rows, reproduce, select_rows

    targets = [e.strip() for e in args.emotions.split(",")] if args.emotions else None
    args.emotions = None  # the config's class set stays the paper's four; these are the targets
    split = args.split or ("session" if args.corpus == "iemocap" else "speakers")
    config = _experiment_config(args, split=split, task="detection",
                                **({"tune": "paper-lr"} if args.tune_lr else {}))
    _announce_wav2vec2(config)
    rows = select_rows(load_rows(args.rows_file), args.rows.split(",") if args.rows else None)
    zetas = PAPER_ZETAS if args.zetas is None else args.zetas
    out = args.out or os.path.join("results", f"reproduce-{config.corpus}")
    if "w2v" in config.branches and any("w2v" in r.get("settings", {}).get("branches", ()) for r in rows):
        config.extractors()["w2v"].key()  # an unreachable checkpoint fails here, before any row trains
    from msir_keras.corpora import FOUR_CLASSES

    reproduce(config, out, rows, targets or FOUR_CLASSES, zetas, overwrite=args.overwrite,
              verbose=2 if args.verbose else 0, train=not args.report_only)
    print(f"results folder: {out}")
    return 0


def _zetas(text):
    """--zetas: comma-separated weightings in [0, 1], or none (no Fig. 5)."""
    if text.strip().lower() in ("", "none", "off"):
        return ()
    limit = _limited("zeta", "--zetas")
    return tuple(limit(v) for v in text.split(","))


def cmd_export(args):
    from msir_keras.export import export_run

    for folder in export_run(args.model, args.out):
        print(f"SavedModel written to {folder}")
    return 0


def _warn(message):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def cmd_predict(args):
    from msir_keras.audio import audio_files
    from msir_keras.detector import Detector

    if args.hop is not None and args.window is None:
        raise ValueError("--hop sets the step between timeline windows: give --window SECONDS with it")
    if os.path.normpath(args.model).endswith(".partial"):
        _warn(f"{args.model} is an unfinished run: only the folds it finished predict (rerun its "
              "`msir train` to finish it)")
    files = audio_files(args.files, warn=_warn)
    detector = Detector(args.model, fold=args.fold, threshold=args.threshold, wav2vec2=args.wav2vec2)
    if args.window is not None:
        return _predict_timelines(detector, files, args)
    table = detector.predict(files, batch_size=args.batch_size, errors="collect", warn=_warn)
    if "error" not in table:
        table["error"] = None
    failed = table[table["error"].notna()]
    for path, reason in zip(failed["path"], failed["error"]):
        print(f"msir predict: {path}: {reason}", file=sys.stderr)
    good = table.drop(index=failed.index).drop(columns=["error"], errors="ignore")
    if args.json:
        print(json.dumps(good.to_dict(orient="records"), indent=2, allow_nan=False))
    elif len(good):
        print(good.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(failed):
        print(f"msir predict: {len(failed)} of {len(table)} file(s) failed (listed above)", file=sys.stderr)
        return 1
    return 0


def _predict_timelines(detector, files, args):
    from msir_keras.audio import AudioError
    from msir_keras.plots import plot_timeline

    hop = args.hop if args.hop is not None else args.window / 4
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                table = detector.timeline(path, window=args.window, hop=hop, batch_size=args.batch_size)
        except AudioError as error:
            print(f"msir predict: {error}", file=sys.stderr)
            failed += 1
            continue
        stem = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".timeline")
        table.to_csv(stem + ".csv", index=False, float_format="%.4f")
        with open(stem + ".json", "w") as handle:
            json.dump({"path": path, "window": args.window, "hop": hop,
                       "windows": table.to_dict(orient="records")}, handle, indent=1, allow_nan=False)
        detection = any(len(n) == 2 and n[0].startswith("not-") for n in detector.class_names.values())
        plot_timeline(table, stem + ".png", threshold=args.threshold if detection else None,
                      title=f"{os.path.basename(path)}: {args.window:g} s windows every {hop:g} s")
        if args.json:
            print(json.dumps({"path": path, "windows": table.to_dict(orient="records")}, indent=1, allow_nan=False))
        else:
            print(f"{path}: {len(table)} windows -> {stem}.csv, .json, .png")
    return 1 if failed else 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="msir", description="MSIR speech emotion detection (Wu et al., IEICE 2024) in Keras."
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error (for bug reports)")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="count what a corpus loader finds, before extracting")
    _corpus_arguments(inspect)
    inspect.add_argument("--emotions", default="four", choices=["four", "all"])
    inspect.add_argument("--json", action="store_true", help="print the counts as JSON")
    inspect.add_argument("--csv", help="write the utterance table to this CSV file")
    inspect.add_argument("--show-skipped", type=int, default=10)
    inspect.set_defaults(handler=cmd_inspect)

    extract = commands.add_parser("extract", help="compute (once) the features of a corpus into the store")
    _corpus_arguments(extract)
    _feature_arguments(extract, "facebook/wav2vec2-base-960h")
    extract.add_argument("--emotions", default="all", choices=["four", "all"])
    extract.add_argument("--features", default="logmel,lld,w2v",
                         help="comma list of logmel,lld,w2v,compare,egemaps (default: %(default)s)")
    extract.add_argument("--shard", help="i/n: extract only the i-th of n shares (1-based)")
    extract.add_argument("--workers", type=_workers, default="auto",
                         help="processes for openSMILE and log-Mels beside the wav2vec 2.0 encoder "
                         "(default: auto, one per core left over; 0: all in this process)")
    extract.add_argument("--batch-size", type=_limited("batch_size", "--batch-size"), default=8,
                         help="wav2vec 2.0 utterances per batch")
    extract.set_defaults(handler=cmd_extract)

    run = commands.add_parser("run", help="the main job: extract, train MSIR on speaker folds, test, table")
    _corpus_arguments(run)
    _add_config_flags(run, training=False, default_recipe=RUN_RECIPE)
    run.add_argument("--model", default=None, choices=["fusion", "msir"],
                     help=f"fusion: MSIR late-fused with a classifier on openSMILE functionals, weight and "
                     f"functionals chosen on the training speakers; msir: MSIR alone (default: {RUN_MODEL})")
    run.add_argument("--branches", default=None,
                     help="MSIR branches, comma-separated, of cr, lld, w2v, func (func: the eGeMAPS functionals "
                     "branch, early fusion) (default: cr,lld,w2v; without w2v under --wav2vec2 off)")
    run.add_argument("--no-baselines", action="store_true",
                     help="leave out the two SVM baselines trained on the same folds (default: trained and "
                     "reported beside the model)")
    run.set_defaults(handler=cmd_run)

    train = commands.add_parser("train", help="an experiment with every setting: task, model, split, loss")
    _corpus_arguments(train, required=False)
    _add_config_flags(train)
    train.add_argument("--tune", default=None, metavar="SPACE",
                       help="search SPACE (paper-lr or a JSON file) with keras-tuner inside each fold, "
                       "on its validation part, before training and testing")
    train.set_defaults(handler=cmd_train)

    tune = commands.add_parser("tune", help="keras-tuner search inside each fold, on validation speakers only")
    _corpus_arguments(tune, required=False)
    _add_config_flags(tune)
    tune.add_argument("--space", required=True,
                      help="paper-lr (the paper's learning-rate grid) or a JSON search space file")
    tune.set_defaults(handler=cmd_tune)

    evaluate = commands.add_parser("evaluate", help="test a run's models again, or on another corpus")
    evaluate.add_argument("run_dir", metavar="RUN", help="a run folder")
    _corpus_arguments(evaluate, required=False)
    evaluate.add_argument("--store", default=None,
                          help="feature cache folder (default: the one the run recorded in its config.json)")
    evaluate.add_argument("--out", default=None,
                          help="where to write (default: RUN/evaluation-retest, or "
                          "RUN/evaluation-<corpus>-<root name> for another corpus)")
    evaluate.set_defaults(handler=cmd_evaluate)

    compare = commands.add_parser("compare", help="runs side by side: a figure per fold, mean and std; or a "
                                  "search's combinations over its folds")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="finished run folders, or one `msir tune` folder")
    compare.add_argument("--names", default=None, help="column names, comma-separated (default: the folder names)")
    compare.add_argument("--figure", default="uar",
                         help="uar (default), wa, macro_f1; detection runs: sensitivity, specificity, f1")
    compare.add_argument("--ensemble", action="store_true",
                         help="add the UAR of the runs' averaged probabilities (runs that differ by seed)")
    compare.add_argument("--out", default=None, help="also write the table here (.md or .csv)")
    compare.set_defaults(handler=cmd_compare)

    from msir_keras import config

    reproduce = commands.add_parser("reproduce", help="the paper's Tables 1, 3, 4 and Figs. 2-5 from runs of "
                                    "every Table 1 row, on any corpus")
    _corpus_arguments(reproduce)
    _add_config_flags(reproduce, training=False, exclude=("--emotions",))
    reproduce.add_argument("--emotions", default=None,
                           help="target emotions, comma-separated (default: all four, angry,happy,neutral,sad)")
    reproduce.add_argument("--rows", default=None,
                           help="Table 1 rows to run, comma-separated keys or numbers (default: all)")
    reproduce.add_argument("--rows-file", default=None,
                           help="a JSON file of rows (default: the paper's, msir_keras/paper_rows.json)")
    reproduce.add_argument("--split", default=None, choices=list(config.SPLITS),
                           help="default: session (1-4 / 5) on IEMOCAP, speaker folds elsewhere")
    reproduce.add_argument("--tune-lr", action="store_true",
                           help="pick each row's learning rate from the paper's grid, per fold, on its "
                           "validation part of the training speakers (keras-tuner)")
    reproduce.add_argument("--zetas", default=None, type=_zetas,
                           help="Fig. 5's focal weightings, comma-separated; 'none' skips Fig. 5 "
                           "(default: 0.25,0.55,0.65,0.75, the values the paper names)")
    reproduce.add_argument("--report-only", action="store_true",
                           help="train nothing: write the tables and figures from the runs finished so far")
    reproduce.set_defaults(handler=cmd_reproduce)

    export = commands.add_parser("export", help="write TensorFlow SavedModels of a run's models")
    export.add_argument("model", help="a run folder or one fold's folder")
    export.add_argument("--out", required=True, help="the export folder")
    export.set_defaults(handler=cmd_export)

    predict = commands.add_parser("predict", help="per-emotion probabilities of audio files")
    predict.add_argument("files", nargs="+", help="audio files, or folders of them")
    predict.add_argument("--model", required=True, help="a run folder, an export, or a fold folder")
    predict.add_argument("--fold", default=None, help="use one fold's model (default: average all)")
    predict.add_argument("--threshold", type=_limited("threshold", "--threshold"), default=0.5,
                         help="detection decision threshold")
    predict.add_argument("--wav2vec2", default=None, help="where the model's wav2vec 2.0 checkpoint is now")
    predict.add_argument("--batch-size", type=_limited("batch_size", "--batch-size"), default=16,
                         help="files (or timeline windows) per forward pass")
    predict.add_argument("--window", type=_limited("window", "--window"), default=None,
                         help="seconds: an emotion timeline of each file, one prediction per window")
    predict.add_argument("--hop", type=_limited("hop", "--hop"), default=None,
                         help="seconds between timeline windows (default: a quarter of --window)")
    predict.add_argument("--out", default=".",
                         help="folder for the timelines' CSV, JSON and PNG (default: the current folder)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=cmd_predict)
    for command in commands.choices.values():
        # --debug is also taken after the command; SUPPRESS keeps the top-level value otherwise.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of any error")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    loud = args.debug or getattr(args, "verbose", False)
    if not loud:
        _quiet_tensorflow()
    if args.command in TENSORFLOW_COMMANDS and not loud:
        # TensorFlow's start-up lines and its retracing notices would bury the package's
        # one-line messages; --verbose or --debug shows them.
        _import_tensorflow_quietly()
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if getattr(args, "out", "") is None and args.command in ("run", "train", "tune"):
        corpus = args.corpus or "run"
        model = getattr(args, "model", None) or (RUN_MODEL if args.command == "run" else "msir")
        args.out = os.path.join("runs", f"{corpus}-{model}" + ("-tuning" if args.command == "tune" else ""))
    warnings.showwarning = _show_warning  # one line each, not Python's file:line form
    if args.debug:
        return args.handler(args)
    from msir_keras.audio import AudioError
    from msir_keras.corpora import CorpusError
    from msir_keras.features import CheckpointError, MissingFeaturesError

    try:
        return args.handler(args)
    except (AudioError, CorpusError, CheckpointError, ConfigError, MissingFeaturesError,
            FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as error:
        print(f"msir {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"msir {args.command}: interrupted; finished work is kept (a run resumes when "
              "started again)", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line here, the traceback with --debug
        print(f"msir {args.command}: internal error: {type(error).__name__}: {error}\n"
              "This is a bug in msir-keras: rerun with --debug for the traceback and report it.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
