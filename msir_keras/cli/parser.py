"""The `msir` command line: one subcommand per job, each calling its `commands.cmd_*`."""

from __future__ import annotations

import argparse

from msir_keras.cli import commands
from msir_keras.cli.flags import (
    RUN_MODEL,
    RUN_RECIPE,
    add_config_flags,
    corpus_arguments,
    feature_arguments,
    limited,
    workers,
    zetas,
)


def build_parser():
    from msir_keras import config
    from msir_keras.corpora import FOUR_CLASSES
    from msir_keras.detector import HOPS_PER_WINDOW, PREDICT_BATCH, THRESHOLD, TIMELINE_BATCH
    from msir_keras.features import DEFAULT_BATCH_SIZE, FEATURES, INPUTS
    from msir_keras.reproduce import PAPER_ZETAS
    from msir_keras.service import API_KEY_VARIABLE, LOOPBACK, MAX_MB, MAX_SECONDS, MAX_TIMELINE_MINUTES

    defaults = config.ExperimentConfig()
    parser = argparse.ArgumentParser(
        prog="msir", description="MSIR speech emotion detection (Wu et al., IEICE 2024) in Keras."
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", required=True)

    inspect = subparsers.add_parser("inspect", help="count what a corpus loader finds, before extracting")
    corpus_arguments(inspect)
    inspect.add_argument("--emotions", default=defaults.emotions, choices=config.EMOTIONS)
    inspect.add_argument("--json", action="store_true", help="print the counts as JSON")
    inspect.add_argument("--csv", help="write the utterance table to this CSV file")
    inspect.add_argument("--show-skipped", type=int, default=10)
    inspect.set_defaults(handler=commands.cmd_inspect)

    extract = subparsers.add_parser("extract", help="compute (once) the features of a corpus into the store")
    corpus_arguments(extract)
    feature_arguments(extract)
    extract.add_argument("--emotions", default="all", choices=config.EMOTIONS)
    extract.add_argument("--features", default=",".join(INPUTS),
                         help=f"comma list of {','.join(FEATURES)} (default: %(default)s)")
    extract.add_argument("--shard", help="i/n: extract only the i-th of n shares (1-based)")
    extract.add_argument("--workers", type=workers, default="auto",
                         help="processes for openSMILE and log-Mels beside the wav2vec 2.0 encoder "
                         "(default: auto, one per core left over; 0: all in this process)")
    extract.add_argument("--batch-size", type=limited("batch_size", "--batch-size"), default=DEFAULT_BATCH_SIZE,
                         help="wav2vec 2.0 utterances per batch (default: %(default)s)")
    extract.set_defaults(handler=commands.cmd_extract)

    run = subparsers.add_parser("run", help="the main job: extract, train MSIR on speaker folds, test, table")
    corpus_arguments(run)
    add_config_flags(run, training=False, default_recipe=RUN_RECIPE)
    run.add_argument("--model", default=None, choices=["fusion", "msir"],
                     help=f"fusion: MSIR late-fused with a classifier on openSMILE functionals, weight and "
                     f"functionals chosen on the training speakers; msir: MSIR alone (default: {RUN_MODEL})")
    run.add_argument("--branches", default=None,
                     help="MSIR branches, comma-separated, of cr, lld, w2v, func (func: the eGeMAPS functionals "
                     f"branch, early fusion) (default: {','.join(config.BRANCHES)}; without w2v under "
                     "--upstream off)")
    run.add_argument("--no-baselines", action="store_true",
                     help="leave out the two SVM baselines trained on the same folds (default: trained and "
                     "reported beside the model)")
    run.set_defaults(handler=commands.cmd_run)

    train = subparsers.add_parser("train", help="an experiment with every setting: task, model, split, loss")
    corpus_arguments(train, required=False)
    add_config_flags(train)
    train.add_argument("--tune", default=None, metavar="SPACE",
                       help="search SPACE (paper-lr or a JSON file) with keras-tuner inside each fold, "
                       "on its validation part, before training and testing")
    train.set_defaults(handler=commands.cmd_train)

    tune = subparsers.add_parser("tune", help="keras-tuner search inside each fold, on validation speakers only")
    corpus_arguments(tune, required=False)
    add_config_flags(tune)
    tune.add_argument("--space", required=True,
                      help="paper-lr (the paper's learning-rate grid) or a JSON search space file")
    tune.set_defaults(handler=commands.cmd_tune)

    evaluate = subparsers.add_parser("evaluate", help="test a run's models again, or on another corpus")
    evaluate.add_argument("run_dir", metavar="RUN", help="a run folder")
    corpus_arguments(evaluate, required=False)
    evaluate.add_argument("--store", default=None,
                          help="feature cache folder (default: the one the run recorded in its config.json)")
    evaluate.add_argument("--out", default=None,
                          help="where to write (default: RUN/evaluation-retest, or "
                          "RUN/evaluation-<corpus>-<root name> for another corpus)")
    evaluate.set_defaults(handler=commands.cmd_evaluate)

    compare = subparsers.add_parser("compare", help="runs side by side: a figure per fold, mean and std; or a "
                                    "search's combinations over its folds")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="finished run folders, or one `msir tune` folder")
    compare.add_argument("--names", default=None, help="column names, comma-separated (default: the folder names)")
    compare.add_argument("--figure", default="uar",
                         help="uar (default), wa, macro_f1; detection runs: sensitivity, specificity, f1")
    compare.add_argument("--ensemble", action="store_true",
                         help="add the UAR of the runs' averaged probabilities (runs that differ by seed)")
    compare.add_argument("--out", default=None, help="also write the table here (.md or .csv)")
    compare.set_defaults(handler=commands.cmd_compare)

    reproduce = subparsers.add_parser("reproduce", help="the paper's Tables 1, 3, 4 and Figs. 2-5 from runs of "
                                      "every Table 1 row, on any corpus")
    corpus_arguments(reproduce)
    add_config_flags(reproduce, training=False, exclude=("--emotions",), out_help=(
        "the results folder: tables, figures, and a run folder per row under runs/ (default: "
        "results/reproduce-<corpus>)",
        "retrain a row whose finished run was made with other settings than these"))
    reproduce.add_argument("--emotions", default=None,
                           help=f"target emotions, comma-separated (default: all four, {','.join(FOUR_CLASSES)})")
    reproduce.add_argument("--rows", default=None,
                           help="Table 1 rows to run, comma-separated keys or numbers (default: all)")
    reproduce.add_argument("--rows-file", default=None,
                           help="a JSON file of rows (default: the paper's, msir_keras/paper_rows.json)")
    reproduce.add_argument("--split", default=None, choices=list(config.SPLITS),
                           help="default: session (1-4 / 5) on IEMOCAP, speaker folds elsewhere")
    reproduce.add_argument("--tune-lr", action="store_true",
                           help="pick each row's learning rate from the paper's grid, per fold, on its "
                           "validation part of the training speakers (keras-tuner)")
    reproduce.add_argument("--zetas", default=None, type=zetas,
                           help="Fig. 5's focal weightings, comma-separated; 'none' skips Fig. 5 "
                           f"(default: {','.join(f'{z:g}' for z in PAPER_ZETAS)}, the values the paper names)")
    reproduce.add_argument("--report-only", action="store_true",
                           help="train nothing: write the tables and figures from the runs finished so far")
    reproduce.set_defaults(handler=commands.cmd_reproduce)

    export = subparsers.add_parser("export", help="write TensorFlow SavedModels of a run's models")
    export.add_argument("model", help="a run folder or one fold's folder")
    export.add_argument("--out", required=True, help="the export folder (refused if it holds files)")
    export.add_argument("--overwrite", action="store_true", help="write into an --out that already holds files")
    export.set_defaults(handler=commands.cmd_export)

    predict = subparsers.add_parser("predict", help="per-emotion probabilities of audio files")
    predict.add_argument("files", nargs="+", help="audio files, or folders of them")
    predict.add_argument("--model", required=True, help="a run folder, an export, or a fold folder")
    predict.add_argument("--fold", default=None, help="use one fold's model (default: average all)")
    predict.add_argument("--threshold", type=limited("threshold", "--threshold"), default=THRESHOLD,
                         help="detection decision threshold (default: %(default)s)")
    predict.add_argument("--upstream", "--wav2vec2", dest="wav2vec2", default=None, metavar="SOURCE",
                         help="where the model's upstream (wav2vec 2.0, WavLM, ...) checkpoint is now")
    predict.add_argument("--batch-size", type=limited("batch_size", "--batch-size"), default=None,
                         help=f"files per forward pass (default: {PREDICT_BATCH}), or timeline windows "
                         f"(default: {TIMELINE_BATCH})")
    predict.add_argument("--window", type=limited("window", "--window"), default=None,
                         help="seconds: an emotion timeline of each file, one prediction per window")
    predict.add_argument("--hop", type=limited("hop", "--hop"), default=None,
                         help=f"seconds between timeline windows (default: --window / {HOPS_PER_WINDOW})")
    predict.add_argument("--out", default=".",
                         help="folder for the timelines' CSV, JSON and PNG (default: the current folder)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=commands.cmd_predict)

    serve = subparsers.add_parser("serve", help="a detector as an HTTP service with a web page: predict, timeline")
    serve.add_argument("--model", required=True, help="a run folder, an export, or a fold folder")
    serve.add_argument("--host", default=LOOPBACK,
                       help="address to listen on (default: %(default)s, this machine only; another address "
                       "serves beyond it: give --api-key with it)")
    serve.add_argument("--port", type=limited("port", "--port"), default=8000,
                       help="TCP port (default: %(default)s; 0: a free one, printed)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help=f"require KEY on every endpoint but /v1/health and the page (default: the "
                       f"{API_KEY_VARIABLE} environment variable; unset: no key; an empty key is refused)")
    serve.add_argument("--max-mb", type=limited("max_mb", "--max-mb"), default=MAX_MB,
                       help="largest upload in MB; larger ones get 413 (default: %(default)s)")
    serve.add_argument("--max-seconds", type=limited("max_seconds", "--max-seconds"), default=MAX_SECONDS,
                       help="longest recording /v1/predict takes, in seconds; longer ones get 413 naming "
                       "/v1/timeline (default: %(default)s)")
    serve.add_argument("--max-timeline-minutes", type=limited("max_timeline_minutes", "--max-timeline-minutes"),
                       default=MAX_TIMELINE_MINUTES, help="longest recording /v1/timeline takes, in minutes; "
                       "longer ones get 413 (default: %(default)s)")
    serve.add_argument("--log-dir", default=None,
                       help="append one JSON line per request to LOG_DIR/requests.jsonl (default: nothing is "
                       "written to disk)")
    serve.add_argument("--threads", type=limited("threads", "--threads"), default=None,
                       help="threads that decode /v1/predict's uploads and extract their features (default: one "
                       "per core this process may use; timelines have one thread of their own)")
    serve.add_argument("--batch-size", type=limited("batch_size", "--batch-size"), default=PREDICT_BATCH,
                       help="requests per forward pass at most (default: %(default)s)")
    serve.add_argument("--fold", default=None, help="use one fold's model (default: average all)")
    serve.add_argument("--threshold", type=limited("threshold", "--threshold"), default=THRESHOLD,
                       help="detection decision threshold (default: %(default)s)")
    serve.add_argument("--upstream", "--wav2vec2", dest="wav2vec2", default=None, metavar="SOURCE",
                       help="where the model's upstream (wav2vec 2.0, WavLM, ...) checkpoint is now")
    serve.set_defaults(handler=commands.cmd_serve)
    for command in subparsers.choices.values():
        # --debug is also taken after the command; SUPPRESS keeps the top-level value otherwise.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of any error")
    return parser
