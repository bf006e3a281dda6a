"""Real-time factors of the feature extractors and of `msir extract` over EmoDB.

RTF = seconds of computation per second of audio (lower is faster). Each
extractor is timed alone on every file (audio already read); then the whole
`msir extract` (reading, hashing, all three branch features, writing the
store) is timed cold (empty store) with every extractor in one process
(`--workers 0`) and with openSMILE and log-Mels in worker processes beside
the encoder (`--workers auto`), and cached (second run). wav2vec 2.0 is
a randomly initialised base-sized model (the base checkpoint's shape and
cost; the hub is not reachable here), saved and loaded as a real checkpoint.

Usage: python benchmarks/extract.py [--root ../shared/data/emodb] [--limit N]
Writes benchmarks/results/extract.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(HERE, "..", "..", "shared", "data", "emodb"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "extract.json"))
    args = parser.parse_args()

    import torch

    from msir_keras.audio import read_audio
    from msir_keras.corpora import load_emodb
    from msir_keras.features import LLD, LogMel, Wav2Vec2, save_random_checkpoint

    paths = load_emodb(args.root).utterances["path"].tolist()[: args.limit]
    signals = [read_audio(p) for p in paths]
    audio_seconds = sum(len(s) for s in signals) / 16000
    work = tempfile.mkdtemp(prefix="msir-bench-")
    checkpoint = save_random_checkpoint(os.path.join(work, "wav2vec2-base"), size="base")
    results = {
        "files": len(paths),
        "audio_seconds": round(audio_seconds, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch threads {torch.get_num_threads()}",
        "extractors": {},
    }
    for name, extractor in (("logmel", LogMel()), ("lld", LLD()), ("wav2vec2-base", Wav2Vec2(source=checkpoint))):
        extractor(signals[0])  # warm-up: library loads, model load
        started = time.perf_counter()
        extractor.extract_many(signals)
        seconds = time.perf_counter() - started
        results["extractors"][name] = {
            "seconds": round(seconds, 2),
            "rtf": round(seconds / audio_seconds, 4),
            "ms_per_file": round(1000 * seconds / len(signals), 1),
        }
        print(f"{name:>14}: {seconds:7.1f} s, RTF {seconds / audio_seconds:.4f}, "
              f"{1000 * seconds / len(signals):.1f} ms/file")

    manifest = os.path.join(work, "corpus.csv")
    with open(manifest, "w") as handle:
        handle.write("path,label,speaker\n" + "".join(f"{p},x,s\n" for p in paths))
    # Cold with everything in one process, then with openSMILE and log-Mels in worker processes
    # beside the encoder (each in an empty store), then cached.
    for run, workers, store in (("cold_in_process", "0", "store-0"), ("cold", "auto", "store"),
                                ("cached", "auto", "store")):
        command = [sys.executable, "-m", "msir_keras.cli", "extract", "--corpus", "manifest", "--root", manifest,
                   "--store", os.path.join(work, store), "--wav2vec2", checkpoint, "--emotions", "all",
                   "--workers", workers]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        results[f"msir_extract_{run}"] = {"seconds": round(seconds, 2), "rtf": round(seconds / audio_seconds, 4),
                                          "workers": workers}
        print(f"msir extract ({run}, --workers {workers}): {seconds:.1f} s, RTF {seconds / audio_seconds:.4f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
