"""Training throughput and peak memory of MSIR presets, and `msir predict` latency.

For the `small` and `paper` presets, with batches bucketed by length (the
default) and padded to the longest utterance of the set, on EmoDB's 339
four-class utterances: utterances per second over timed training steps
(after one warm-up step), and the peak resident memory of the process.
Each configuration runs in its own process, so peaks do not mix.
log-Mels and LLDs are EmoDB's real features; wav2vec 2.0 inputs are random
arrays of the real shape (T/2 frames of 768): the branch's cost depends on
shapes only, and no pretrained checkpoint is reachable here.

Then the latency of `msir predict` on a 4.5 s file: cold (a fresh process,
imports and model loading included) and warm (Detector.predict in-process),
for a small model with all three branches and a base-sized wav2vec 2.0.

Usage: python benchmarks/train.py [--steps 8] [--paper-steps 2] [--paper-batch-size 16]
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

HERE = os.path.dirname(os.path.abspath(__file__))
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


def measure(preset, bucketing, steps, batch_size, store):
    """One configuration, in this process: prints a JSON line."""
    import keras

    from msir_keras.losses import FocalLoss
    from msir_keras.model import MSIR

    data = _features(store)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = MSIR.from_preset(preset)
    model.set_normalization(data.fit_normalization())
    model.compile(keras.optimizers.Adam(1e-3), FocalLoss(zeta=0.25, theta=2.0))
    dataset = data.dataset(batch_size, shuffle=True, bucketing=bucketing).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "preset": preset, "bucketing": bucketing, "batch_size": batch_size, "steps": steps,
        "utterances_per_second": round(steps * batch_size / seconds, 2),
        "seconds_per_step": round(seconds / steps, 3),
        "peak_rss_mb": round(peak), "peak_rss_above_data_mb": round(peak - baseline),
    }))


def predict_latency(work, store):
    import numpy as np
    import soundfile

    from msir_keras.export import Detector
    from msir_keras.experiment import ExperimentConfig, build_msir
    from msir_keras.features import save_random_checkpoint

    checkpoint = save_random_checkpoint(os.path.join(work, "wav2vec2-base"), size="base")
    data = _features(store)
    config = ExperimentConfig(corpus="emodb", root=EMODB, wav2vec2=checkpoint)
    model = build_msir(config, 4, ["angry", "happy", "neutral", "sad"], data)
    model.set_normalization(data.fit_normalization())
    folder = os.path.join(work, "model")
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "model.keras"))
    wavs = sorted(os.listdir(os.path.join(EMODB, "wav")))
    durations = {w: soundfile.info(os.path.join(EMODB, "wav", w)).duration for w in wavs}
    wav = os.path.join(EMODB, "wav", min(durations, key=lambda w: abs(durations[w] - 4.5)))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "msir_keras.cli", "predict", wav, "--model", folder],
                   check=True, capture_output=True)
    cold = time.perf_counter() - started
    detector = Detector(folder)
    detector.predict([wav])
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        detector.predict([wav])
        warm.append(time.perf_counter() - started)
    return {"file": os.path.basename(wav), "duration_seconds": round(durations[os.path.basename(wav)], 2),
            "cold_process_seconds": round(cold, 2), "warm_median_seconds": round(float(np.median(warm)), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--paper-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--paper-batch-size", type=int, default=16,
                        help="the paper preset's batch on a CPU (64 takes minutes per step)")
    parser.add_argument("--store", default=os.path.join(tempfile.gettempdir(), "msir-bench-store"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train.json"))
    parser.add_argument("--predict-only", action="store_true", help="only the predict latency")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "BUCKETING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, bucketing = args.one[0], args.one[1] == "bucketed"
        steps = args.steps if preset == "small" else args.paper_steps
        batch = args.batch_size if preset == "small" else args.paper_batch_size
        return measure(preset, bucketing, steps, batch, args.store)

    results = {"machine": f"{os.cpu_count()} cores", "training": []}
    if args.predict_only and os.path.exists(args.out):
        with open(args.out) as handle:
            results = json.load(handle)
    for preset in () if args.predict_only else ("small", "paper"):
        for bucketing in ("bucketed", "padded-to-longest"):
            output = subprocess.run(
                [sys.executable, __file__, "--one", preset, bucketing, "--steps", str(args.steps),
                 "--paper-steps", str(args.paper_steps), "--batch-size", str(args.batch_size),
                 "--paper-batch-size", str(args.paper_batch_size),
                 "--store", args.store],
                check=True, capture_output=True, text=True,
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            results["training"].append(row)
            print(f"{preset:>5} {bucketing:>17} (batch {row['batch_size']}): "
                  f"{row['utterances_per_second']:8.2f} utt/s, "
                  f"{row['seconds_per_step']:.2f} s/step, peak RSS {row['peak_rss_mb']} MB "
                  f"({row['peak_rss_above_data_mb']} MB above the loaded data)")
    with tempfile.TemporaryDirectory() as work:
        results["predict"] = predict_latency(work, args.store)
    print(f"msir predict, {results['predict']['duration_seconds']} s file: "
          f"{results['predict']['cold_process_seconds']} s cold (new process), "
          f"{results['predict']['warm_median_seconds']} s warm")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
