"""`msir serve` under load: requests/s and p50/p95 latency at 1, 8 and 32 concurrent clients, on loopback.

A run is trained first (EmoDB four classes, log-Mels + LLDs, the `small`
preset, five speaker folds of one epoch each: the numbers are about speed,
not accuracy; the same model size as benchmarks/predict.py's) unless
`--model RUN` names one. Then:

- serve: `msir serve --model RUN --port 0` in a new process; after a few
  warm-up requests, `--requests` uploads of EmoDB files (multipart, one file
  per request, each client a keep-alive session) at each concurrency; the
  server's forward passes per level come from /v1/health's counters;
- predict: `msir predict FOLDER --model RUN --json` over the same files in a
  new process (cold start included, as a user runs it), and
  `Detector.predict` on them in a process that has predicted before (warm:
  the batch path's own speed).

Usage: python benchmarks/serve.py [--model RUN] [--requests 96] [--levels 1,8,32]
Writes benchmarks/results/serve.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EMODB = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "emodb"))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
           PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))

WARM_PREDICT = r"""
import json, sys, time
from msir_keras.detector import Detector
detector = Detector(sys.argv[1])
files = json.load(open(sys.argv[2]))
detector.predict(files[:16])
start = time.perf_counter()
detector.predict(files)
print(time.perf_counter() - start)
"""


def _train(out, store):
    subprocess.run([sys.executable, "-m", "msir_keras.cli", "train", "--corpus", "emodb", "--root", EMODB,
                    "--emotions", "four", "--wav2vec2", "off", "--preset", "small", "--epochs", "1",
                    "--store", store, "--out", out, "--overwrite"], check=True, env=ENV, stdout=subprocess.DEVNULL)


def _start(model):
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "msir_keras.cli", "serve", "--model", model, "--port", "0"],
                               stdout=log, stderr=subprocess.STDOUT, env=ENV)
    started = time.perf_counter()
    while "http://" not in open(log.name).read():
        if process.poll() is not None or time.perf_counter() - started > 300:
            raise SystemExit("msir serve did not start:\n" + open(log.name).read()[-3000:])
        time.sleep(0.1)
    text = open(log.name).read()
    return process, text[text.index("http://"):].split()[0].rstrip("/"), time.perf_counter() - started


def _level(url, files, clients):
    import requests

    chunks = [files[i::clients] for i in range(clients)]

    def client(paths):
        latencies = []
        with requests.Session() as session:
            for path in paths:
                with open(path, "rb") as handle:
                    data = handle.read()
                start = time.perf_counter()
                response = session.post(f"{url}/v1/predict", files={"file": (os.path.basename(path), data)},
                                        timeout=300)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {response.status_code} {response.text}")
        return latencies

    before = requests.get(f"{url}/v1/health", timeout=10).json()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for chunk in pool.map(client, chunks) for t in chunk)
    seconds = time.perf_counter() - start
    after = requests.get(f"{url}/v1/health", timeout=10).json()
    return {"clients": clients, "requests": len(latencies), "seconds": round(seconds, 2),
            "requests_per_s": round(len(latencies) / seconds, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
            "forward_passes": after["batches"] - before["batches"],
            "mean_batch": round((after["scored"] - before["scored"]) / max(1, after["batches"] - before["batches"]),
                                2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a run folder (default: train one, about 5 minutes)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "serve.json"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="serve-bench-")
    model = args.model or os.path.join(work, "run")
    if args.model is None:
        _train(model, os.path.join(work, "store"))
    wavs = sorted(os.path.join(EMODB, "wav", n) for n in os.listdir(os.path.join(EMODB, "wav")))
    files = (wavs * (args.requests // len(wavs) + 1))[:args.requests]
    print(f"{len(files)} EmoDB files per level, model {model}", flush=True)

    process, url, startup = _start(model)
    try:
        import requests

        health = requests.get(f"{url}/v1/health", timeout=10).json()
        _level(url, files[:4], 1)  # warm-up: connections, the first batches
        levels = []
        for clients in (int(c) for c in args.levels.split(",")):
            levels.append(_level(url, files, clients))
            print(json.dumps(levels[-1]), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)

    folder = os.path.join(work, "files")
    os.makedirs(folder)
    for i, path in enumerate(files):  # copies under distinct names: a file sent twice is predicted twice
        os.symlink(path, os.path.join(folder, f"{i:04d}-{os.path.basename(path)}"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "msir_keras.cli", "predict", folder, "--model", model, "--json"],
                   check=True, env=ENV, stdout=subprocess.DEVNULL)
    cli_seconds = time.perf_counter() - start
    with open(os.path.join(work, "files.json"), "w") as handle:
        json.dump(sorted(os.path.join(folder, n) for n in os.listdir(folder)), handle)
    warm = float(subprocess.run([sys.executable, "-c", WARM_PREDICT, model, os.path.join(work, "files.json")],
                                check=True, env=ENV, capture_output=True, text=True).stdout.split()[-1])
    preset = json.load(open(os.path.join(model, "config.json"))).get("preset")
    results = {
        "model": f"{preset}, branches {'+'.join(health['branches'])}, {health['folds']} fold model(s) averaged",
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average "
                   f"{os.getloadavg()[0]:.1f} at the end",
        "server_startup_s": round(startup, 1),
        "serve": levels,
        "predict_folder": {"files": len(files), "seconds": round(cli_seconds, 2),
                           "files_per_s": round(len(files) / cli_seconds, 2),
                           "note": "msir predict FOLDER in a new process, cold start included"},
        "predict_warm": {"files": len(files), "seconds": round(warm, 2), "files_per_s": round(len(files) / warm, 2),
                         "note": "Detector.predict in a process that has predicted before"},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
