"""Training throughput and peak memory of MSIR presets, by input pipeline and Keras backend.

For the `small` and `paper` presets, on EmoDB's 339 four-class utterances,
pipelines side by side, each timed over whole epochs (every batch once, so
long and short batches count alike), after one untimed epoch (tracing; JAX
compiling every shape): the package's pipeline (`FeatureSet.pipeline`:
length-bucketed numpy batches of a Keras PyDataset) under TensorFlow and,
as `PyDataset@torch` and `PyDataset@jax`, under those backends (JAX: padded
to a multiple of 32 frames); the tf.data pipeline it replaced
(`tfdata_reference.py`: ragged tensors, in-graph length buckets, prefetch);
and tf.data padded to the longest utterance of the set. For each:
utterances per second over timed training steps (after one warm-up step or
epoch), the padded share of the frames, and the peak resident memory of
the process. The paper preset trains on a fixed random subset of the
utterances (a CPU takes seconds per step). Each configuration runs in its
own process, so peaks do not mix. (`msir predict` latency:
benchmarks/predict.py.)
log-Mels and LLDs are EmoDB's real features; wav2vec 2.0 inputs are random
arrays of the real shape (T/2 frames of 768): the branch's cost depends on
shapes only, and no pretrained checkpoint is reachable here.

Usage: python benchmarks/train.py [--epochs 2] [--batch-size 64] [--paper-batch-size 16]
                                  [--paper-utterances 96] [--presets small,paper]
                                  [--pipelines tf.data,PyDataset,PyDataset@torch,...]
Writes benchmarks/results/train.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# Pipelines, each in its own process; NAME@BACKEND runs under that Keras backend (TensorFlow otherwise).
PIPELINES = ("tf.data", "PyDataset", "padded-to-longest", "PyDataset@torch", "PyDataset@jax")
EMODB = os.path.join(HERE, "..", "..", "shared", "data", "emodb")


def _features(store):
    import numpy as np

    from msir_keras.corpora import class_labels, load_emodb
    from msir_keras.data import FeatureSet
    from msir_keras.features import FeatureStore, branch_extractors

    table = load_emodb(EMODB, emotions="four").utterances
    extractors = branch_extractors()
    store = FeatureStore(store)
    store.extract(table["path"], list(extractors.values()))
    data = FeatureSet.from_store(store, table["path"].tolist(), extractors, class_labels(table))
    rng = np.random.default_rng(0)
    data.features["w2v"] = [rng.standard_normal((len(x) // 2, 768)).astype("float32")
                            for x in data.features["logmel"]]
    return data


def _padded_fraction(dataset, batches):
    real = padded = 0
    epoch = dataset.take(batches) if hasattr(dataset, "take") else (dataset[i] for i in range(len(dataset)))
    for inputs, _ in epoch:
        frames = np.asarray(inputs["logmel"])
        padded += frames.shape[0] * frames.shape[1]
        real += int(np.count_nonzero(np.any(frames.reshape(*frames.shape[:2], -1) != 0, axis=-1)))
    return 1 - real / padded


def _dataset(data, pipeline, batch_size):
    """One training epoch's batches, by the named pipeline, and their number."""
    if pipeline == "PyDataset":
        return data.pipeline(batch_size, shuffle=True), len(data.batches(batch_size))
    from tfdata_reference import tfdata_dataset

    dataset = tfdata_dataset(data, batch_size, shuffle=True, bucketing=pipeline == "tf.data")
    return dataset, int(dataset.cardinality())


def measure(preset, pipeline, epochs, batch_size, utterances, store):
    """One configuration, in this process: prints a JSON line."""
    import keras

    backend = keras.backend.backend()

    from msir_keras import engine
    from msir_keras.config import ExperimentConfig

    data = _features(store)
    if utterances and utterances < data.size:
        data = data.subset(np.sort(np.random.default_rng(0).permutation(data.size)[:utterances]))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = ExperimentConfig(preset=preset, wav2vec2="unused", batch_size=batch_size)
    keras.utils.set_random_seed(0)
    model = engine.build(config, data.frame_shapes(), ["angry", "happy", "neutral", "sad"],
                         data.fit_normalization())
    engine.compile_model(model, config)
    dataset, batches = _dataset(data, pipeline, batch_size)
    steps = epochs * batches
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)  # tracing (JAX: compiling every shape) over one epoch
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "preset": preset, "pipeline": pipeline, "backend": backend, "batch_size": batch_size, "utterances": data.size,
        "epochs": epochs, "steps": steps,
        "utterances_per_second": round(epochs * data.size / seconds, 2),
        "seconds_per_epoch": round(seconds / epochs, 2),
        "padded_fraction": round(_padded_fraction(dataset, batches), 3),
        "peak_rss_mb": round(peak), "peak_rss_above_data_mb": round(peak - baseline),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--paper-batch-size", type=int, default=16,
                        help="the paper preset's batch on a CPU (64 takes minutes per step)")
    parser.add_argument("--paper-utterances", type=int, default=96)
    parser.add_argument("--store", default=os.path.join(tempfile.gettempdir(), "msir-bench-store"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train.json"))
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help="of " + ", ".join(PIPELINES) + " (PyDataset@torch: under KERAS_BACKEND=torch)")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "PIPELINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, pipeline = args.one
        small = preset == "small"
        return measure(preset, pipeline, args.epochs, args.batch_size if small else args.paper_batch_size,
                       None if small else args.paper_utterances, args.store)

    results = {"machine": f"{os.cpu_count()} cores", "training": []}
    for preset in args.presets.split(","):
        for name in args.pipelines.split(","):
            pipeline, _, backend = name.partition("@")
            output = subprocess.run(
                [sys.executable, __file__, "--one", preset, pipeline, "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--paper-batch-size", str(args.paper_batch_size),
                 "--paper-utterances", str(args.paper_utterances), "--store", args.store],
                check=True, capture_output=True, text=True,
                env={**os.environ, "KERAS_BACKEND": backend or "tensorflow"},
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            results["training"].append(row)
            print(f"{preset:>5} {name:>17} ({row['utterances']} utt., batch {row['batch_size']}): "
                  f"{row['utterances_per_second']:8.2f} utt/s, {row['seconds_per_epoch']:.1f} s/epoch, "
                  f"padding {row['padded_fraction']:.0%}, peak RSS {row['peak_rss_mb']} MB "
                  f"({row['peak_rss_above_data_mb']} MB above the loaded data)", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
