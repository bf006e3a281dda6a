"""`msir predict` speed: cold start (and where it goes), warm, a folder, a 10-minute timeline.

A run is trained first (EmoDB four classes, log-Mels + LLDs, `small`,
five speaker folds, a few epochs: the numbers here are about speed, not
accuracy) unless `--model RUN` names one. Then, on a 4.5 s EmoDB file:

- cold: `msir predict FILE --model RUN` in a new process, median of
  `--repeats`, against `python -c "import tensorflow"` plus the file's feature
  extraction in a new process (the target: within 1.5x of that sum);
- breakdown: the same cold path timed phase by phase in one new process
  (imports, model loading, features, first forward pass = tracing, second);
- warm: `Detector.predict` on the same file in a process that has predicted
  before, against its extractors plus one forward pass (target: within 1.5x);
- folder: `msir predict wav/` over EmoDB's 535 files, in length-bucketed
  batches, in files/s;
- timeline: `msir predict long.wav --window 4 --hop 1` on 10 minutes of
  EmoDB speech, its time and peak memory; its PNG is kept.

Usage: python benchmarks/predict.py [--model RUN] [--repeats 3]
Writes benchmarks/results/predict.json and benchmarks/results/timeline.png.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EMODB = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "emodb"))
FILE = os.path.join(EMODB, "wav", "10b03Wb.wav")  # 4.49 s
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")

BREAKDOWN = r"""
import json, sys, time
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
import msir_keras.cli; mark("import msir_keras.cli")
import tensorflow, keras; mark("import tensorflow + keras")
from msir_keras.detector import Detector; mark("import msir_keras.detector")
import torch; mark("import torch") if "torch" in sys.argv[3:] else None
detector = Detector(sys.argv[1]); mark("load the fold models")
from msir_keras.audio import read_audio
signal = read_audio(sys.argv[2]); inputs = detector.features([signal]); mark("read + extract features")
detector.probabilities(inputs); mark("first forward pass (tracing)")
detector.probabilities(inputs); mark("second forward pass")
print(json.dumps({b[0]: round(b[1] - a[1], 3) for a, b in zip(marks, marks[1:])}))
"""

EXTRACT_ONLY = r"""
import sys, time
start = time.perf_counter()
from msir_keras.audio import read_audio
from msir_keras.features import LLD, LogMel
signal = read_audio(sys.argv[1]); LogMel()(signal); LLD()(signal)
print(time.perf_counter() - start)
"""


def _timed(command, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=ENV)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return statistics.median(times), done.stdout


def _train(out, store):
    subprocess.run([sys.executable, "-m", "msir_keras.cli", "run", "--corpus", "emodb", "--root", EMODB,
                    "--wav2vec2", "off", "--epochs", "8", "--patience", "8", "--store", store, "--out", out,
                    "--overwrite"], check=True, env=ENV, stdout=subprocess.DEVNULL)


def _long_recording(path, seconds=600.0):
    import numpy as np
    import soundfile

    from msir_keras.audio import read_audio

    names = sorted(os.listdir(os.path.join(EMODB, "wav")))
    pieces, total, index = [], 0, 0
    while total < seconds * 16000:
        signal = read_audio(os.path.join(EMODB, "wav", names[index % len(names)]))
        pieces += [signal, np.zeros(4000, np.float32)]  # a quarter second between utterances
        total += len(signal) + 4000
        index += 1
    soundfile.write(path, np.concatenate(pieces)[: int(seconds * 16000)], 16000)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a run folder (default: train one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="msir-predict-bench-")
    model = args.model or os.path.join(work, "run")
    if not args.model:
        print("training a run to predict with (5 folds, 8 epochs) ...", flush=True)
        _train(model, os.path.join(work, "store"))
    msir = [sys.executable, "-m", "msir_keras.cli"]
    results = {"file": os.path.basename(FILE), "model": "small, log-Mels + LLDs, 5 fold models averaged"}

    tf_import, _ = _timed([sys.executable, "-c", "import tensorflow"], args.repeats)
    extraction, _ = _timed([sys.executable, "-c", EXTRACT_ONLY, FILE], args.repeats)
    cold, _ = _timed([*msir, "predict", FILE, "--model", model], args.repeats)
    _, breakdown = _timed([sys.executable, "-c", BREAKDOWN, model, FILE], 1)
    results["cold"] = {
        "msir_predict_s": round(cold, 2),
        "import_tensorflow_s": round(tf_import, 2),
        "extraction_in_new_process_s": round(extraction, 2),
        "ratio_to_import_plus_extraction": round(cold / (tf_import + extraction), 2),
        "breakdown_s": json.loads(breakdown),
    }
    print(json.dumps(results["cold"], indent=1), flush=True)

    from msir_keras.audio import read_audio
    from msir_keras.detector import Detector

    detector = Detector(model)
    detector.predict([FILE])
    warm = statistics.median(_clock(lambda: detector.predict([FILE])) for _ in range(5))
    signal = read_audio(FILE)
    extract = statistics.median(_clock(lambda: detector.features([signal])) for _ in range(5))
    inputs = detector.features([signal])
    forward = statistics.median(_clock(lambda: detector.probabilities(inputs)) for _ in range(5))
    results["warm"] = {
        "predict_s": round(warm, 3),
        "extract_s": round(extract, 3),
        "forward_s": round(forward, 3),
        "ratio_to_extract_plus_forward": round(warm / (extract + forward), 2),
    }
    print(json.dumps(results["warm"], indent=1), flush=True)

    folder = os.path.join(EMODB, "wav")
    count = len([n for n in os.listdir(folder) if n.endswith(".wav")])
    seconds, _ = _timed([*msir, "predict", folder, "--model", model, "--json"], 1)
    results["folder"] = {"files": count, "seconds": round(seconds, 1), "files_per_s": round(count / seconds, 1),
                         "note": "a new process, cold start included; features computed, not cached"}
    print(json.dumps(results["folder"], indent=1), flush=True)

    long = _long_recording(os.path.join(work, "ten-minutes.wav"))
    out = os.path.join(work, "timeline")
    measure = [sys.executable, "-c",
               "import resource, runpy, sys; sys.argv = ['msir'] + sys.argv[1:]; "
               "code = 0\ntry: runpy.run_module('msir_keras.cli', run_name='__main__')\n"
               "except SystemExit as e: code = e.code\n"
               "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)",
               "predict", long, "--model", model, "--window", "4", "--hop", "1", "--out", out]
    seconds, stdout = _timed(measure, 1)
    peak = int(stdout.split("PEAK")[-1]) / 1024
    windows = sum(1 for _ in open(os.path.join(out, "ten-minutes.timeline.csv"))) - 1
    results["timeline"] = {"recording_s": 600, "window_s": 4, "hop_s": 1, "windows": windows,
                           "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
    print(json.dumps(results["timeline"], indent=1), flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    shutil.copy(os.path.join(out, "ten-minutes.timeline.png"), os.path.join(HERE, "results", "timeline.png"))
    with open(os.path.join(HERE, "results", "predict.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    shutil.rmtree(work, ignore_errors=True)


def _clock(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
