"""MSIR on EmoDB on a GPU (or here, for testing): throughput, compile time, memory and UAR per fold.

Reads the pack that pack.py wrote (`.gpu/`: features, labels, folds; no
audio, openSMILE or TensorFlow needed) and trains MSIR (log-Mel CR branch
and LLD branch; the wav2vec branch is off) with the package's engine
(`engine.build`, `engine.compile_model`, `engine.fit`) on each speaker fold,
under the Keras backend KERAS_BACKEND names (jax or torch), once per
precision. Each precision runs in a process of its own: a fresh JAX or
PyTorch allocator (peak memory per precision), and one that fails leaves
the others' results.

Measured per fold: every epoch's training time (from the epoch's start to
its validation's start, the device synchronised at both ends) and
validation time; throughput is the training utterances over the median
training time of the epochs after the first; "compile" is the first
epoch's training time less that median (JAX traces and compiles each new
batch shape, so the first epoch holds most of it; later epochs can still
meet new shapes, which the median leaves out). The test speakers are
predicted once, with the weights of the best val_uar epoch (EarlyStopping,
as `msir train`), and scored with `msir_keras.metrics`.

Precision: `ExperimentConfig.precision` accepts "float32" and
"mixed_float16" only, so the policy (e.g. "mixed_bfloat16") is set here with
`engine.precision(policy)` around build, compile and fit, and the config
keeps "float32"; the JSON says so.

Budget: --budget-s is this process's whole wall time, shared equally by the
precisions still to run. A fold that would not fit (less than a third of
the previous fold's time left) is not started, and a running fold stops at
the deadline less --reserve-s (kept for the test prediction); the JSON is
written after every fold, so whatever finished is kept. The plan's size and
the throughput it needs are printed first.

    KERAS_BACKEND=jax python benchmarks/gpu/train.py --out results/jax.json
    python benchmarks/gpu/train.py --summarize results/jax.json results/torch.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

import emodb_pack  # noqa: E402

BRANCHES = ("cr", "lld")  # no wav2vec features travel
PRECISION_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "mixed_bfloat16", "bf16": "mixed_bfloat16",
                     "mixed_bfloat16": "mixed_bfloat16", "float16": "mixed_float16", "fp16": "mixed_float16",
                     "mixed_float16": "mixed_float16"}
MIB = 2 ** 20


def log(text=""):
    print(text, flush=True)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default=os.path.join(REPO, ".gpu"), help="pack.py's folder (default: .gpu/)")
    parser.add_argument("--preset", default="paper", help="MSIR sizes (msir_keras.presets): paper, small, tiny")
    parser.add_argument("--recipe", default="paper", help="training settings (config.RECIPES): paper, small-data")
    parser.add_argument("--folds", type=int, default=5, help="the first N of the pack's 5 speaker folds")
    parser.add_argument("--epochs", type=int, default=30, help="most epochs per fold (EarlyStopping may stop sooner)")
    parser.add_argument("--patience", type=int, default=None, help="EarlyStopping's patience (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (paper: 64)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--precision", default="float32,mixed_bfloat16",
                        help="comma-separated Keras dtype policies: float32, mixed_bfloat16 (bf16), mixed_float16")
    parser.add_argument("--budget-s", type=float, default=270.0, help="wall seconds for this whole command")
    parser.add_argument("--reserve-s", type=float, default=30.0,
                        help="seconds a fold keeps for its test prediction when the budget ends it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="keep this many utterances (each speaker's in turn): quick checks on a CPU")
    parser.add_argument("--pad-to", type=int, default=None,
                        help="JAX: batches padded to a multiple of this many frames (default: data.JAX_PAD_TO)")
    parser.add_argument("--jax-cache", default="/tmp/msir-jax-cache",
                        help="JAX's persistent compilation cache (folds compile the same programs); '' for none")
    parser.add_argument("--out", default=None, help="the JSON written (default: benchmarks/gpu/results-<backend>.json)")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="print the tables of finished runs and exit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one precision, in this process
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)  # time.time() to stop by
    args = parser.parse_args(argv)
    if args.summarize:
        return args
    try:
        args.precisions = [PRECISION_ALIASES[p.strip()] for p in args.precision.split(",") if p.strip()]
    except KeyError as error:
        parser.error(f"unknown precision {error}; choose from {sorted(PRECISION_ALIASES)}")
    args.backend = os.environ.get("KERAS_BACKEND", "")
    if args.backend not in ("jax", "torch", "tensorflow"):
        parser.error("set KERAS_BACKEND to jax or torch (the GPU machine has no TensorFlow)")
    args.out = args.out or os.path.join(HERE, f"results-{args.backend}.json")
    return args


def write_json(path, value):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        json.dump(value, handle, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    os.replace(path + ".tmp", path)


def config_for(args):
    """The ExperimentConfig the folds train with: the recipe, then the command's settings."""
    from msir_keras.config import ExperimentConfig

    config = ExperimentConfig(corpus="emodb", preset=args.preset, branches=BRANCHES, wav2vec2=None,
                              seed=args.seed).with_recipe(args.recipe)
    changes = {"epochs": args.epochs}
    for name in ("patience", "batch_size", "learning_rate"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(config, **changes)


def limited(pack, count, seed):
    """The pack cut to `count` utterances, each speaker's in turn (shuffled), folds remapped (no part may empty)."""
    rng = np.random.default_rng(seed)
    speakers = pack["speakers"]
    queues = [list(rng.permutation(np.flatnonzero(speakers == s))) for s in sorted(set(speakers))]
    keep = []
    while len(keep) < min(count, len(speakers)):
        for queue in queues:
            if queue and len(keep) < count:
                keep.append(queue.pop())
    keep = np.sort(np.array(keep))
    position = -np.ones(len(speakers), dtype=np.int64)
    position[keep] = np.arange(len(keep))
    folds = []
    for name, *parts in pack["folds"]:
        parts = [position[p[position[p] >= 0]] for p in parts]
        if not all(len(p) for p in parts):
            raise SystemExit(f"--limit {count}: fold {name} loses a whole part ({[len(p) for p in parts]}); keep more")
        folds.append((name, *parts))
    return {**pack, "features": {n: [a[i] for i in keep] for n, a in pack["features"].items()},
            "labels": pack["labels"][keep], "speakers": speakers[keep], "names": pack["names"][keep], "folds": folds}


# ----------------------------------------------------------------------------- the plan (parent process)

def plan(args, manifest):
    config = config_for(args)
    folds = manifest["folds"]["parts"][: args.folds]
    scale = 1.0 if args.limit is None else min(1.0, args.limit / manifest["utterances"])
    training = sum(round(f["train"] * scale) for f in folds)
    validation = sum(round(f["validation"] * scale) for f in folds)
    per_precision = args.budget_s / len(args.precisions)
    epochs_total = training * config.epochs
    log(f"plan: backend {args.backend}, preset {config.preset}, branches {'+'.join(BRANCHES)}, recipe {config.recipe} "
        f"(batch {config.batch_size}, learning rate {config.learning_rate:g}, at most {config.epochs} epochs, "
        f"patience {config.patience}), precisions {', '.join(args.precisions)}")
    log(f"  {len(folds)} fold(s) of {manifest['utterances'] if args.limit is None else args.limit} utterances: "
        + ", ".join(f"{f['name']} ({round(f['train'] * scale)}/{round(f['validation'] * scale)}/"
                    f"{round(f['test'] * scale)})" for f in folds) + " train/validation/test")
    log(f"  per precision at most {epochs_total} training utterance-epochs (+ {validation * config.epochs} "
        f"validation) in {per_precision:.0f} s: every epoch of every fold needs >= "
        f"{epochs_total / max(per_precision, 1):.0f} utt/s of training alone, compilation aside; EarlyStopping "
        "usually ends folds sooner, and the budget stops what remains")
    return {"folds": [f["name"] for f in folds], "training_utterance_epochs": epochs_total,
            "budget_s_per_precision": per_precision}


def run_all(args):
    """The parent: one child process per precision, each with its share of the time left."""
    manifest = emodb_pack.read_manifest(args.pack)
    started = time.time()
    deadline = started + args.budget_s
    report = {"backend": args.backend, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
              "command": sys.argv, "plan": plan(args, manifest), "pack": _pack_summary(manifest), "runs": []}
    write_json(args.out, report)
    for index, precision in enumerate(args.precisions):
        share = (deadline - time.time()) / (len(args.precisions) - index)
        child_out = f"{args.out}.{precision}.json"
        if os.path.exists(child_out):
            os.unlink(child_out)
        if share < 30:
            log(f"BUDGET: {precision} not run: {share:.0f} s left for it")
            report["runs"].append({"precision": precision, "status": f"not run: budget ({share:.0f} s left)"})
            continue
        command = [sys.executable, os.path.abspath(__file__), "--child", "--precision", precision,
                   "--deadline", repr(time.time() + share), "--out", child_out, *_passed_on(args)]
        log(f"\n=== {args.backend} {precision}: {share:.0f} s")
        result = subprocess.run(command)
        run = json.load(open(child_out)) if os.path.exists(child_out) else {"precision": precision, "folds": []}
        if result.returncode != 0:
            run["status"] = f"failed (exit {result.returncode}; see the log above)" + (
                f" after {len(run['folds'])} fold(s)" if run.get("folds") else "")
        report["runs"].append(run)
        write_json(args.out, report)
        if os.path.exists(child_out):
            os.unlink(child_out)
    report["wall_s"] = time.time() - started
    write_json(args.out, report)
    log("")
    print_tables(report)
    log(f"wrote {args.out}")


def _passed_on(args):
    out = ["--pack", args.pack, "--preset", args.preset, "--recipe", args.recipe, "--folds", str(args.folds),
           "--epochs", str(args.epochs), "--reserve-s", str(args.reserve_s), "--seed", str(args.seed),
           "--jax-cache", args.jax_cache]
    for name in ("patience", "batch_size", "learning_rate", "limit", "pad_to"):
        if getattr(args, name) is not None:
            out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return out


def _pack_summary(manifest):
    return {k: manifest.get(k) for k in ("created", "commit", "utterances", "class_counts", "rebuild_checks")} | {
        "inputs": {n: {"shape": e["shape"], "carried": e["carried"], "recomputed": e["recomputed"]}
                   for n, e in manifest["extractors"].items()}}


# ----------------------------------------------------------------------------- one precision (child process)

def timing_callback(sync, deadline, label, count, epochs, progress=None):
    """A Keras callback: per-epoch training and validation seconds, the device synchronised; stops at the deadline.

    `progress(callback)`, when given, is called after every epoch (the JSON keeps a fold killed halfway).
    """
    import keras

    class Timing(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s, self.val_s, self.stopped_by_budget, self._train_end = [], [], False, None

        def on_epoch_begin(self, epoch, logs=None):
            sync(self.model)
            self._epoch, self._begin, self._train_end = epoch, time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self._train_end is None:  # the epoch's validation (evaluate inside fit)
                sync(self.model)
                self._train_end = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            last = self._epoch + 1 == epochs and batch + 1 == self.params.get("steps")  # nothing left to cut
            if deadline is not None and time.time() > deadline and not last:
                self.model.stop_training, self.stopped_by_budget = True, True

        def on_epoch_end(self, epoch, logs=None):
            sync(self.model)
            end = time.perf_counter()
            train_end = self._train_end or end
            self.train_s.append(train_end - self._begin)
            self.val_s.append(end - train_end)
            logs = logs or {}
            log(f"[{label}] epoch {epoch + 1:3d}/{epochs}  train {self.train_s[-1]:7.2f} s "
                f"{count / self.train_s[-1]:8.1f} utt/s  val {self.val_s[-1]:6.2f} s  "
                f"loss {logs.get('loss', float('nan')):.4f}  val_uar {logs.get('val_uar', float('nan')):.3f}"
                + ("  (budget: stopped inside this epoch)" if self.stopped_by_budget else ""))
            # Even the fastest epoch so far would not end before the deadline: stop now.
            if (deadline is not None and epoch + 1 < epochs
                    and time.time() + min(self.train_s) + min(self.val_s) > deadline):
                if not self.model.stop_training:  # not already stopped by EarlyStopping
                    self.model.stop_training, self.stopped_by_budget = True, True
            if progress is not None:
                progress(self)

    return Timing()


def synchroniser(backend):
    """A function(model) that waits until the device has finished the work queued so far."""
    if backend == "jax":
        import jax

        def sync(model):
            jax.block_until_ready([v.value for v in model.optimizer.variables[:1]] if model.optimizer else [])
            jax.effects_barrier()
        return sync
    if backend == "torch":
        import torch

        return (lambda model: torch.cuda.synchronize()) if torch.cuda.is_available() else (lambda model: None)
    return lambda model: None


def device_info(backend):
    info = {"python": platform.python_version(), "numpy": np.__version__}
    import keras

    info["keras"] = keras.__version__
    if backend == "jax":
        import jax

        info.update(jax=jax.__version__, devices=[str(d) for d in jax.devices()], platform=jax.default_backend())
        info["device_name"] = getattr(jax.devices()[0], "device_kind", str(jax.devices()[0]))
    elif backend == "torch":
        import torch

        info.update(torch=torch.__version__, cuda=torch.cuda.is_available())
        info["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return info


def peak_memory(backend):
    """Peak device memory in bytes through the framework's own API, or None where it has none (CPU)."""
    try:
        if backend == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats()
            return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
        if backend == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001  (a figure we report, never a reason to fail)
        return None
    return None


def run_child(args):
    precision = args.precisions[0]
    label = f"{args.backend} {precision}"
    cache = None
    if args.backend == "jax" and args.jax_cache:
        import jax

        cache = {"dir": args.jax_cache, "entries_before": len(os.listdir(args.jax_cache))
                 if os.path.isdir(args.jax_cache) else 0}
        jax.config.update("jax_compilation_cache_dir", args.jax_cache)
    started = time.time()
    import keras

    from msir_keras import data as data_module
    from msir_keras import engine
    from msir_keras.corpora import FOUR_CLASSES, Fold
    from msir_keras.data import FeatureSet
    from msir_keras.metrics import classification_report

    if keras.backend.backend() != args.backend:
        raise SystemExit(f"Keras runs on {keras.backend.backend()}, KERAS_BACKEND says {args.backend}")
    if args.pad_to is not None:  # FeatureSet.pipeline reads the module's constant at each call
        data_module.JAX_PAD_TO = args.pad_to
    imported_s = time.time() - started

    pack = emodb_pack.load(args.pack)
    if args.limit is not None:
        pack = limited(pack, args.limit, args.seed)
    config = config_for(args)
    for name, extractor in config.extractors().items():  # the pack holds what this config's extractors make
        if extractor.key() != pack["manifest"]["extractors"][name]["key"]:
            raise SystemExit(f"{name}: the pack holds {pack['manifest']['extractors'][name]['key']}, this config's "
                             f"extractor is {extractor.key()}: run pack.py again")
    classes = pack["manifest"]["classes"]
    assert tuple(classes) == tuple(FOUR_CLASSES)
    data = FeatureSet(pack["features"]).with_labels(pack["labels"])
    loaded_s = time.time() - started - imported_s
    sync = synchroniser(args.backend)

    run = {"precision": precision, "policy": precision,
           "policy_set_by": "engine.precision() around build/compile/fit; ExperimentConfig.precision stays float32 "
                            "(it accepts float32 and mixed_float16 only)" if precision != "float32" else "the config",
           "config": {k: v for k, v in config.to_dict().items() if k in (
               "preset", "branches", "recipe", "learning_rate", "batch_size", "epochs", "patience", "label_smoothing",
               "lr_schedule", "clipnorm", "class_weights", "model_options", "loss", "seed")},
           "pad_to": (args.pad_to or data_module.JAX_PAD_TO) if args.backend == "jax" else 1,
           "jax_cache": cache, "device": device_info(args.backend), "import_s": imported_s, "load_pack_s": loaded_s,
           "utterances": data.size, "folds": [], "messages": [], "status": "running"}
    log(f"[{label}] {run['device'].get('device_name')}; imports {imported_s:.1f} s, pack {loaded_s:.1f} s "
        f"({data.size} utterances); {len(config.extractors())} inputs "
        + ", ".join(f"{n} {s}" for n, s in data.frame_shapes().items()))

    folds = [Fold(name, train, validation, test) for name, train, validation, test in pack["folds"]][: args.folds]
    run["folds_planned"] = len(folds)
    write_json(args.out, run)  # a run killed before its first epoch ends still says how far it came
    reserve = args.reserve_s
    for index, fold in enumerate(folds):
        left = args.deadline - time.time() - reserve
        if run["folds"]:
            previous = run["folds"][-1]["wall_s"]
            if left < previous / 3:
                message = (f"BUDGET: fold(s) {', '.join(f.name for f in folds[index:])} not started: {left:.0f} s "
                           f"left before the reserve, the last fold took {previous:.0f} s")
                log(f"[{label}] {message}")
                run["messages"].append(message)
                break
        fold_started = time.time()
        train_part, valid_part = data.subset(fold.train), data.subset(fold.validation)
        test_part = data.subset(fold.test)
        keras.utils.set_random_seed(config.seed)

        def progress(callback, name=fold.name):
            run["current"] = {"name": name, "epoch_train_s": callback.train_s, "epoch_val_s": callback.val_s}
            write_json(args.out, run)

        timing = timing_callback(sync, args.deadline - reserve, f"{label} {fold.name}", train_part.size,
                                 config.epochs, progress)
        with engine.precision(precision):  # as engine.train does with config.precision
            model = engine.build(config, train_part.frame_shapes(), classes, train_part.fit_normalization(),
                                 engine.feature_config(config))
            engine.compile_model(model, config)
            history = engine.fit(model, train_part, valid_part, config, config.seed, callbacks=[timing])
            test_started = time.perf_counter()
            probabilities = test_part.predict(model, config.batch_size)
            sync(model)
            test_s = time.perf_counter() - test_started
        report = classification_report(test_part.labels, probabilities.argmax(axis=-1), classes)
        train_s = timing.train_s
        steady = float(np.median(train_s[1:])) if len(train_s) > 1 else None
        epochs_run = len(history)
        stopped = ("budget" if timing.stopped_by_budget else "early stopping" if epochs_run < config.epochs
                   else "all epochs")
        result = {
            "name": fold.name, "train": train_part.size, "validation": valid_part.size, "test": test_part.size,
            "epochs_run": epochs_run, "stopped": stopped,
            "best_epoch": int(history["val_uar"].idxmax()) + 1 if "val_uar" in history else None,
            "best_val_uar": float(history["val_uar"].max()) if "val_uar" in history else None,
            "first_epoch_train_s": train_s[0], "first_epoch_val_s": timing.val_s[0],
            "compile_s": (train_s[0] - steady) if steady is not None else None,
            # Every epoch's time beyond the median: the first epoch's compilation and any later one's.
            "excess_train_s": float(sum(train_s) - steady * len(train_s)) if steady is not None else None,
            "steady_epoch_train_s": steady,
            "utt_per_s": train_part.size / steady if steady else None,
            "first_epoch_utt_per_s": train_part.size / train_s[0],
            "epoch_train_s": train_s, "epoch_val_s": timing.val_s, "test_predict_s": test_s,
            "test_uar": report["uar"], "test_wa": report["wa"], "test_macro_f1": report["macro_f1"],
            "peak_memory_bytes_so_far": peak_memory(args.backend), "wall_s": time.time() - fold_started,
        }
        run["folds"].append(result)
        run.pop("current", None)
        log(f"[{label}] {fold.name}: test UAR {report['uar']:.3f} (WA {report['wa']:.3f}), {epochs_run} epochs "
            f"({stopped}; best {result['best_epoch']}), first epoch {train_s[0]:.1f} s, "
            + (f"{result['utt_per_s']:.1f} utt/s after it" if steady else "one epoch: no steady throughput")
            + f", fold {result['wall_s']:.0f} s")
        if stopped == "budget":
            message = f"BUDGET: fold {fold.name} stopped at epoch {epochs_run} of {config.epochs} by the deadline"
            run["messages"].append(message)
        _summarise_run(run, args.backend, len(folds))
        write_json(args.out, run)
        del model
        keras.backend.clear_session()
    run["status"] = "done"
    run["tensorflow_imported"] = any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    _summarise_run(run, args.backend, len(folds))
    write_json(args.out, run)


def _summarise_run(run, backend, planned):
    folds = run["folds"]
    rates = [f["utt_per_s"] for f in folds if f["utt_per_s"]]
    complete = [f["test_uar"] for f in folds if f["stopped"] != "budget"]
    run.update(
        folds_planned=planned,
        utt_per_s=float(np.median(rates)) if rates else None,
        compile_s=folds[0]["compile_s"] if folds else None,
        first_epoch_train_s=folds[0]["first_epoch_train_s"] if folds else None,
        peak_memory_bytes=peak_memory(backend),
        peak_host_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        mean_uar=float(np.mean([f["test_uar"] for f in folds])) if folds else None,
        mean_uar_complete_folds=float(np.mean(complete)) if complete else None,
    )


# ----------------------------------------------------------------------------- tables

def print_tables(*reports):
    """One table of every run of these reports (one per backend), with the device of each."""
    def number(value, form):
        return "-" if value is None else format(value, form)

    for report in reports:
        devices = {r["device"].get("device_name") for r in report["runs"] if r.get("device")}
        first = next((r["device"] for r in report["runs"] if r.get("device")), {})
        log(f"{report['backend']}: {', '.join(map(str, devices)) or '?'} (keras {first.get('keras')}, "
            f"{report['backend']} {first.get(report['backend'])}, python {first.get('python')})")
    names = list(dict.fromkeys(f["name"] for report in reports for r in report["runs"] for f in r.get("folds", [])))
    header = ["backend", "precision", "compile s", "1st epoch s", "utt/s", "peak GPU MiB", *names, "mean UAR", "status"]
    rows = []
    for report in reports:
        for run in report["runs"]:
            uars = {f["name"]: f"{f['test_uar']:.3f}" + ("*" if f["stopped"] == "budget" else "")
                    for f in run.get("folds", [])}
            memory = run.get("peak_memory_bytes")
            rows.append([report["backend"], run["precision"], number(run.get("compile_s"), ".1f"),
                         number(run.get("first_epoch_train_s"), ".1f"), number(run.get("utt_per_s"), ".1f"),
                         number(memory / MIB if memory else None, ".0f"), *[uars.get(n, "-") for n in names],
                         number(run.get("mean_uar"), ".3f"),
                         f"{run.get('status', '?')}, {len(run.get('folds', []))}/{run.get('folds_planned', '?')} folds"])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for line in (header, ["-" * w for w in widths], *rows):
        log("| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths)) + " |")
    for report in reports:
        for run in report["runs"]:
            for message in run.get("messages", []):
                log(f"  {report['backend']} {run['precision']}: {message}")
    if any(f["stopped"] == "budget" for report in reports for r in report["runs"] for f in r.get("folds", [])):
        log("  * stopped by the budget before EarlyStopping or the last epoch")
    log("  utt/s: training utterances / median epoch training time after the first (median over folds); compile s: "
        "the first fold's first epoch less that median; UAR on each fold's test speakers")


def with_leftovers(path):
    """A backend's report with the runs its parent never merged: a precision's own JSON, left when `timeout`
    killed the command (`<out>.<precision>.json`)."""
    report = json.load(open(path))
    merged = {run["precision"] for run in report["runs"]}
    for precision in PRECISION_ALIASES.values():
        part = f"{path}.{precision}.json"
        if precision not in merged and os.path.exists(part):
            run = json.load(open(part))
            current = run.get("current")
            if run.get("status") != "running":  # it finished; its parent was killed before merging it
                report["runs"].append(run)
                merged.add(precision)
                continue
            run["status"] = "killed " + (f"in fold {current['name']} after {len(current['epoch_train_s'])} epoch(s), "
                                         f"the first's training {current['epoch_train_s'][0]:.1f} s"
                                         if current and current["epoch_train_s"]
                                         else f"before an epoch of fold {len(run.get('folds', [])) + 1} ended")
            report["runs"].append(run)
            merged.add(precision)
    return report


def main(argv=None):
    args = parse(argv)
    if args.summarize:
        for path in args.summarize:
            if not os.path.exists(path):
                log(f"{path}: not written")
        print_tables(*[with_leftovers(path) for path in args.summarize if os.path.exists(path)])
        return
    if args.child:
        run_child(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
