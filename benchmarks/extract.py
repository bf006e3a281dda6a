"""Real-time factors of the feature extractors and of `msir extract` over EmoDB.

RTF = seconds of computation per second of audio (lower is faster). Each
extractor is timed alone on every file (audio already read); then the whole
`msir extract` (reading, hashing, all three branch features, writing the
store) is timed cold (empty store) with every extractor in one process
(`--workers 0`) and with openSMILE and log-Mels in worker processes beside
the encoder (`--workers auto`), and cached (second run). wav2vec 2.0 is
a randomly initialised base-sized model (the base checkpoint's shape and
cost; the hub is not reachable here), saved and loaded as a real checkpoint.

`--upstreams` times each upstream family instead (`msir_keras.features.Upstream`),
base-sized and random in the same way (hidden 768 and 12 blocks; Whisper:
whisper-base's encoder, 512 and 6), on the first `--upstream-seconds` of
EmoDB's files (the fastest of `--repeats`), one layer and every layer, and states the store's disk cost
of each per hour of audio. Whisper pads every utterance to its 30 s window,
so it is also timed on one 30 s signal (its best case).

Usage: python benchmarks/extract.py [--root ../shared/data/emodb] [--limit N]
       python benchmarks/extract.py --upstreams [--upstream-seconds 8]
Writes benchmarks/results/extract.json (extract-upstreams.json with --upstreams).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(HERE, "..", "..", "shared", "data", "emodb"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--out", default=None, help="the results' JSON file")
    parser.add_argument("--upstreams", action="store_true", help="time each upstream family instead")
    parser.add_argument("--upstream-seconds", type=float, default=8.0, help="audio per family (--upstreams)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per family, the fastest kept (--upstreams)")
    args = parser.parse_args()
    if args.upstreams:
        return upstreams(args)
    args.out = args.out or os.path.join(HERE, "results", "extract.json")

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


def _timed(function, argument, repeats):
    """(wall, CPU) seconds of the fastest of `repeats` calls: CPU seconds hold where other work shares the cores."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function(argument)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def upstreams(args):
    """Each family's real-time factor at base size, one layer and every layer, and its disk cost per hour."""
    import numpy as np
    import torch

    from msir_keras.audio import read_audio
    from msir_keras.corpora import load_emodb
    from msir_keras.features import FAMILIES, Upstream, save_random_checkpoint

    signals = []
    for path in load_emodb(args.root).utterances["path"]:
        if sum(map(len, signals)) >= args.upstream_seconds * 16000:
            break
        signals.append(read_audio(path))
    seconds = sum(map(len, signals)) / 16000
    full_window = np.concatenate([read_audio(p) for p in load_emodb(args.root).utterances["path"][:15]])[:30 * 16000]
    # rtf: wall seconds per second of audio; cpu_rtf: this process's CPU seconds per second of audio (all threads).
    results = {"files": len(signals), "audio_seconds": round(seconds, 2), "load_average": os.getloadavg()[0],
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch threads {torch.get_num_threads()}",
               "families": {}}
    with tempfile.TemporaryDirectory(prefix="msir-upstreams-") as work:
        for family in FAMILIES:
            folder = save_random_checkpoint(os.path.join(work, family), size="base", family=family)
            row = {}
            for layer in (None, "all"):
                extractor = Upstream(folder, layer=layer)
                extractor(signals[0])  # warm-up: the model loaded and run once
                wall, cpu = _timed(extractor.extract_many, signals, args.repeats)
                name = "all_layers" if layer else "one_layer"
                row[f"rtf_{name}"] = round(wall / seconds, 4)
                row[f"cpu_rtf_{name}"] = round(cpu / seconds, 4)
                row[f"bytes_per_hour_{name}"] = extractor.bytes_per_hour()
            if extractor.family.whisper:
                wall, cpu = _timed(extractor, full_window, args.repeats)
                row["rtf_30s_signal"], row["cpu_rtf_30s_signal"] = round(wall / 30, 4), round(cpu / 30, 4)
            row.update(hidden_size=extractor.hidden_size, layers=extractor.num_layers, frame_rate=extractor.frame_rate,
                       example=extractor.family.example)
            results["families"][family] = row
            print(f"{family:>15}: RTF {row['rtf_one_layer']:.3f} (one layer), {row['rtf_all_layers']:.3f} (all), "
                  f"CPU-seconds per second {row['cpu_rtf_one_layer']:.3f}; "
                  f"store {row['bytes_per_hour_one_layer'] / 1e9:.2f} GB/h (one, float32), "
                  f"{row['bytes_per_hour_all_layers'] / 1e9:.2f} GB/h (all {row['layers'] + 1}, float16)"
                  + (f"; 30 s signal RTF {row['rtf_30s_signal']:.3f}, CPU {row['cpu_rtf_30s_signal']:.3f}"
                     if "rtf_30s_signal" in row else ""),
                  flush=True)
            shutil.rmtree(folder)
    out = args.out or os.path.join(HERE, "results", "extract-upstreams.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
