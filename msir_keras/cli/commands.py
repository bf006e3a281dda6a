"""What each `msir` command does with its parsed arguments: call the library, print what came of it."""

from __future__ import annotations

import json
import os
import sys
import warnings

from msir_keras.cli.flags import RUN_MODEL, RUN_RECIPE, experiment_config, wav2vec2_source


def _warn(message):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


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
    from msir_keras.features import FeatureStore, Upstream, named_extractors, parse_shard

    wanted = [name.strip() for name in args.features.split(",") if name.strip()]
    corpus = load_corpus(args.corpus, args.root, emotions=args.emotions)
    for warning in corpus.warnings:
        print(f"WARNING: {warning}")
    source = wav2vec2_source(args.wav2vec2)
    if "w2v" in wanted and source is None:
        wanted.remove("w2v")
        print("upstream off: no wav2vec 2.0 (or other upstream) features extracted")
    extractors = named_extractors(wanted, {"deltas": args.logmel_deltas}, {"deltas": args.lld_deltas},
                                  {"source": source, "layer": args.wav2vec2_layer} if source else None)
    for extractor in extractors:
        if isinstance(extractor, Upstream):
            extractor.batch_size = args.batch_size
            extractor.key()  # resolves the checkpoint now: fail before any work
            print(f"upstream {extractor.config.source}: {extractor.family.model_type}, {extractor.num_layers} "
                  f"blocks of {extractor.hidden_size}, {extractor.frame_rate:g} frames/s; layer "
                  f"{extractor.config.layer if extractor.config.layer is not None else 'last'}: features "
                  f"{extractor.feature_shape} {extractor.store_dtype}, {extractor.bytes_per_hour() / 1e9:.2f} GB "
                  "per hour of audio")
    shard = parse_shard(args.shard) if args.shard else None
    paths = corpus.utterances["path"].tolist()
    print(f"{corpus.name}: {len(paths)} files, features {', '.join(e.name for e in extractors)} "
          f"-> {args.store}" + (f" (shard {args.shard})" if shard else ""))
    summary = FeatureStore(args.store).extract(paths, extractors, shard=shard, progress=True, workers=args.workers,
                                               verify=True)
    print(summary)
    return 1 if summary.failed and not (summary.computed or summary.cached) else 0


def _announce_wav2vec2(config):
    """Says first, before TensorFlow prints anything, when MSIR runs without its wav2vec branch."""
    if config.model in ("msir", "fusion") and config.wav2vec2 is None:
        inputs = {"cr": "log-Mels", "lld": "LLDs", "func": "eGeMAPS functionals"}
        used = " and ".join(inputs[b] for b in config.branches if b in inputs)
        print(f"NOTE: wav2vec branch OFF (--wav2vec2 off): MSIR runs on {used} only; "
              "give a wav2vec 2.0 checkpoint folder with --wav2vec2 FOLDER for the full model",
              flush=True)


def _default_out(args, model):
    """The run (or search) folder when --out is not given: runs/<corpus>-<model>[-tuning]."""
    if args.out is None:
        suffix = "-tuning" if args.command == "tune" else ""
        args.out = os.path.join("runs", f"{args.corpus or 'run'}-{model}{suffix}")
    return args.out


def _run(config, args):
    from msir_keras.experiment import run_experiment
    from msir_keras.runfolder import check_run_folder

    check_run_folder(config, args.out, args.overwrite)  # before any work
    if config.model in ("msir", "fusion") and "w2v" in config.branches:
        config.extractors()["w2v"].key()  # fail at once on an unreachable checkpoint
    run_experiment(config, args.out, overwrite=args.overwrite, verbose=1 if args.verbose and sys.stdout.isatty() else
                   (2 if args.verbose else 0))
    print(f"run folder: {args.out}")
    return 0


def cmd_run(args):
    _default_out(args, args.model or RUN_MODEL)
    config = experiment_config(args, default_recipe=RUN_RECIPE, split="speakers", task="classification",
                               model=args.model or RUN_MODEL, baselines=not args.no_baselines)
    _announce_wav2vec2(config)
    return _run(config, args)


def cmd_train(args):
    _default_out(args, args.model or "msir")
    config = experiment_config(args)
    _announce_wav2vec2(config)
    if config.tune:
        from msir_keras.tuning import cluster_role, load_space

        load_space(config.tune)  # a bad space fails before any work
        if cluster_role() is not None:
            raise ValueError("keras-tuner's chief/worker mode (KERASTUNER_* variables) runs under `msir tune` "
                             "on the chief and on every worker; `msir train --tune` searches in this process alone")
    return _run(config, args)


def cmd_tune(args):
    _default_out(args, args.model or "msir")
    config = experiment_config(args, tune=args.space)
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
    from msir_keras.compare import compare_markdown, compare_runs, is_search_folder, search_summary
    from msir_keras.reports import markdown_table

    if len(args.runs) == 1 and is_search_folder(args.runs[0]):
        table = search_summary(args.runs[0])  # a `msir tune` folder: its combinations over the folds
        text = markdown_table(table.drop(columns="target") if table["target"].nunique() == 1 else table)
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
    from msir_keras.corpora import FOUR_CLASSES
    from msir_keras.reproduce import PAPER_ZETAS, load_rows, reproduce, select_rows

    targets = [e.strip() for e in args.emotions.split(",")] if args.emotions else None
    args.emotions = None  # the config's class set stays the paper's four; these are the targets
    split = args.split or ("session" if args.corpus == "iemocap" else "speakers")
    config = experiment_config(args, split=split, task="detection",
                               **({"tune": "paper-lr"} if args.tune_lr else {}))
    _announce_wav2vec2(config)
    rows = select_rows(load_rows(args.rows_file), args.rows.split(",") if args.rows else None)
    zetas = PAPER_ZETAS if args.zetas is None else args.zetas
    out = args.out or os.path.join("results", f"reproduce-{config.corpus}")
    if "w2v" in config.branches and any("w2v" in r.get("settings", {}).get("branches", ()) for r in rows):
        config.extractors()["w2v"].key()  # an unreachable checkpoint fails here, before any row trains
    reproduce(config, out, rows, targets or FOUR_CLASSES, zetas, overwrite=args.overwrite,
              verbose=2 if args.verbose else 0, train=not args.report_only)
    print(f"results folder: {out}")
    return 0


def cmd_export(args):
    from msir_keras.export import export_run

    for folder in export_run(args.model, args.out, overwrite=args.overwrite):
        print(f"SavedModel written to {folder}")
    return 0


def cmd_predict(args):
    from msir_keras.audio import audio_files
    from msir_keras.detector import PREDICT_BATCH, Detector

    if args.hop is not None and args.window is None:
        raise ValueError("--hop sets the step between timeline windows: give --window SECONDS with it")
    if os.path.normpath(args.model).endswith(".partial"):
        _warn(f"{args.model} is an unfinished run: only the folds it finished predict (rerun its "
              "`msir train` to finish it)")
    files = audio_files(args.files, warn=_warn)
    detector = Detector(args.model, fold=args.fold, threshold=args.threshold, wav2vec2=args.wav2vec2)
    if args.window is not None:
        return _predict_timelines(detector, files, args)
    table = detector.predict(files, batch_size=args.batch_size or PREDICT_BATCH, errors="collect", warn=_warn)
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
    from msir_keras.detector import TIMELINE_BATCH

    failed = 0
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                table, stem = detector.write_timeline(path, args.out, window=args.window, hop=args.hop,
                                                      batch_size=args.batch_size or TIMELINE_BATCH)
        except AudioError as error:
            print(f"msir predict: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"path": path, "windows": table.to_dict(orient="records")}, indent=1, allow_nan=False))
        else:
            print(f"{path}: {len(table)} windows -> {stem}.csv, .json, .png")
    return 1 if failed else 0


def cmd_serve(args):
    from msir_keras.service import Limits, serve

    limits = Limits(max_mb=args.max_mb, max_seconds=args.max_seconds, max_timeline_minutes=args.max_timeline_minutes,
                    api_key=args.api_key, workers=args.threads,
                    batch_size=args.batch_size, log_dir=args.log_dir)
    return serve(args.model, host=args.host, port=args.port, limits=limits, fold=args.fold,
                 threshold=args.threshold, wav2vec2=args.wav2vec2, warn=_warn)
