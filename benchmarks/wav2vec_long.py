"""Memory and time of wav2vec 2.0 on long recordings: encoded whole against in windows.

Each case runs in a new process (so its peak resident memory is its own): a
randomly initialised base-sized model (the base checkpoint's shape and
cost; the hub is not reachable here), saved and loaded as a real
checkpoint, encodes a synthetic speech-like signal (EmoDB utterances
concatenated) of the given length, whole (`chunk_length=None`) or in the
default 30 s windows. Printed and written: seconds, peak RSS, the growth of
the peak over the model loaded alone, and how far the windowed features are
from the whole ones (relative Frobenius error) where both were run.

Usage: python benchmarks/wav2vec_long.py [--seconds 30 60 120 240] [--whole-up-to 120]
Writes benchmarks/results/wav2vec_long.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
import numpy as np
from msir_keras.audio import read_audio
from msir_keras.corpora import load_emodb
from msir_keras.features import Wav2Vec2

folder, root, seconds, whole, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
paths = load_emodb(root, emotions="all").utterances["path"].tolist()
signal, index = [], 0
while sum(map(len, signal)) < seconds * 16000:
    signal.append(read_audio(paths[index % len(paths)]))
    index += 1
signal = np.concatenate(signal)[: int(seconds * 16000)]
extractor = Wav2Vec2(source=folder, chunk_length=None if whole else 30.0)
extractor(signal[:16000])  # the model loaded and run once
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
features = extractor(signal)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(out, features)
print(json.dumps({"seconds_of_audio": seconds, "whole": whole, "frames": len(features), "compute_s": round(elapsed, 2),
                  "peak_rss_mb": round(peak), "growth_mb": round(peak - base)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(HERE, "..", "..", "shared", "data", "emodb"))
    parser.add_argument("--seconds", type=float, nargs="+", default=[30, 60, 120, 240])
    parser.add_argument("--whole-up-to", type=float, default=120, help="longest signal also encoded whole")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "wav2vec_long.json"))
    args = parser.parse_args()

    import numpy as np
    import torch

    from msir_keras.features import save_random_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_checkpoint(os.path.join(tmp, "base"), size="base", seed=0)
        for seconds in args.seconds:
            results = {}
            for whole in ([True, False] if seconds <= args.whole_up_to else [False]):
                array = os.path.join(tmp, f"{seconds}-{whole}.npy")
                line = subprocess.run([sys.executable, "-c", CHILD, folder, args.root, str(seconds),
                                       "1" if whole else "0", array],
                                      check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                row = json.loads(line)
                results[whole] = np.load(array)
                if not whole and True in results:
                    reference = results[True]
                    row["relative_error_vs_whole"] = float(
                        np.linalg.norm(results[False] - reference) / np.linalg.norm(reference))
                print(row, flush=True)
                rows.append(row)
    report = {"machine": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "model": "wav2vec 2.0 base shape, random weights, group norm", "chunk_length_s": 30.0,
              "chunk_overlap_s": 2.0, "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
