"""Packs what the GPU benchmark needs on a machine without TensorFlow, openSMILE or the corpus.

Runs here (CPU, with the package's usual dependencies). Writes `.gpu/` at the
repository root (ignored through `.git/info/exclude`; name it in the device
tool's `carry`):

    .gpu/wheels/        the wheels the GPU machine lacks for `import keras` and the package's imports
    .gpu/emodb.npz      EmoDB's four-class features, labels, speakers and folds (see emodb_pack.py)
    .gpu/manifest.json  what the pack holds, how it was checked, its sizes

The features come from the package's own extractors through its feature
store (an existing store is reused; missing entries are extracted, which
needs openSMILE). The wheels are checked three ways: their Requires-Dist
against what the GPU machine has (KINDS.md's package list) plus what is
carried; the third-party modules the package's training modules import,
measured in a process with TensorFlow hidden; and a simulated
`pip install --target` for CPython 3.12 on x86-64 Linux.

    python benchmarks/gpu/pack.py            # then: du -sh .gpu

Refuses (exit 2, no manifest) when the pack exceeds --limit-mib (60 MiB):
the working tree that travels is limited to 64 MiB with the tracked files.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

import emodb_pack  # noqa: E402
from emodb_pack import TRAIN_IMPORTS  # noqa: E402

# The 'cuda' image's Python packages (device/KINDS.md, "Python packages already there", read 2026-11-17).
DEVICE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()

# What the GPU machine lacks: Keras and its requirements that are not there, and what the
# package imports at import time (python_speech_features in the extractors' modules, soundfile
# in audio.py, with cffi and pycparser beneath it). Versions: those installed here, where tested.
CARRIED = ("keras", "namex", "optree", "python_speech_features", "soundfile", "cffi", "pycparser")
FALLBACK_VERSIONS = {"keras": "3.15.1", "namex": "0.1.0", "optree": "0.20.0", "python_speech_features": "0.6",
                     "soundfile": "0.14.0", "cffi": "2.0.0", "pycparser": "3.0"}
# The device README's pip command: CPython 3.12 wheels for x86-64 Linux.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
TARGET = ["--python-version", "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)]]
DEVICE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython", "platform_system": "Linux", "sys_platform": "linux",
                  "os_name": "posix", "platform_machine": "x86_64", "extra": ""}
MIB = 2 ** 20


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def log(text=""):
    print(text, flush=True)


# ----------------------------------------------------------------------------- features

def default_store():
    """This checkout's feature-store/, else the main checkout's (worktrees share one), else a new one here."""
    candidates = [os.path.join(REPO, "feature-store")]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        candidates.append(os.path.join(os.path.dirname(common), "feature-store"))
    except (OSError, subprocess.CalledProcessError):
        pass
    return next((c for c in candidates if os.path.isdir(c)), candidates[0])


def pack_features(root, store_root, out):
    """Writes emodb.npz; returns the manifest's feature part."""
    from msir_keras.config import ExperimentConfig
    from msir_keras.corpora import FOUR_CLASSES, class_labels, load_corpus, make_folds
    from msir_keras.features import FeatureStore

    config = ExperimentConfig(corpus="emodb", root=root, wav2vec2=None, branches=("cr", "lld"), store=store_root)
    extractors = config.extractors()  # {"logmel": LogMel, "lld": LLD}: the package's defaults (2D log-Mels, 3D-LLD)
    table = load_corpus("emodb", root, emotions="four").utterances
    store = FeatureStore(store_root)
    started = time.time()
    summary = store.extract(table["path"], list(extractors.values()))  # reads the cache; extracts what is missing
    log(f"store {store_root}: {summary} ({time.time() - started:.1f} s)")
    if summary.failed:
        failed = {path for path, _ in summary.failed}
        table = table[~table["path"].isin(failed)].reset_index(drop=True)
        log(f"{len(failed)} file(s) left out; {len(table)} remain")
    full = {name: store.load_many(table["path"].tolist(), e) for name, e in extractors.items()}
    labels = class_labels(table, FOUR_CLASSES)

    folds = make_folds(table, config.split, n_folds=config.n_folds, validation=config.validation, seed=config.seed,
                       by=config.validation_by)
    for fold in folds:
        # With two or more training speakers `msir run` keeps make_folds' folds unchanged
        # (experiment._make_folds -> selection._without_same_speaker_selection).
        assert table["speaker"].iloc[fold.train].nunique() >= 2 and len(fold.validation) and len(fold.test), fold.name

    lld_config = extractors["lld"].get_config()
    logmel_config = extractors["logmel"].get_config()
    base_dim = full["lld"][0].shape[1] // (1 + lld_config["deltas"])
    carried = {
        "logmel": [emodb_pack.carried_logmel(a) for a in full["logmel"]],
        "lld": [emodb_pack.carried_lld(a, lld_config, base_dim) for a in full["lld"]],
    }
    arrays = {"labels": labels, "speakers": table["speaker"].to_numpy(str), "genders": table["gender"].to_numpy(str),
              "names": np.array([os.path.basename(p) for p in table["path"]]),
              "fold_names": np.array([f.name for f in folds])}
    for name, parts in carried.items():
        stored, scale = emodb_pack.to_float16(np.concatenate(parts))
        arrays[name], arrays[f"{name}_scale"] = stored, scale
        arrays[f"{name}_lengths"] = np.array([len(a) for a in parts], dtype=np.int64)
    for i, fold in enumerate(folds):
        for part in ("train", "validation", "test"):
            arrays[f"fold{i}_{part}"] = np.asarray(getattr(fold, part), dtype=np.int64)
    path = os.path.join(out, emodb_pack.FEATURES_FILE)
    temporary = path + ".tmp.npz"
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)

    # What train.py rebuilds against what the extractors made: the formula alone (from float32), and
    # after float16 (the pack). Errors in units of each column's standard deviation.
    checks = {}
    for name, rebuild in (("logmel", lambda a: emodb_pack.rebuild_logmel(a, logmel_config)),
                          ("lld", lambda a: emodb_pack.rebuild_lld(a, lld_config, base_dim))):
        reference = np.concatenate(full[name])
        std = reference.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        formula = np.concatenate([rebuild(a) for a in carried[name]])
        packed = np.concatenate([rebuild(a) for a in emodb_pack.split(
            emodb_pack.from_float16(arrays[name], arrays[f"{name}_scale"]), arrays[f"{name}_lengths"])])
        checks[name] = {"formula_max_error_in_std": float(np.max(np.abs(formula - reference) / std)),
                        "packed_max_error_in_std": float(np.max(np.abs(packed - reference) / std)),
                        "packed_mean_error_in_std": float(np.mean(np.abs(packed - reference) / std))}
        log(f"{name}: {reference.shape[0]} frames x {reference.shape[1:]}; rebuilt from the pack: max error "
            f"{checks[name]['packed_max_error_in_std']:.2e} std (mean {checks[name]['packed_mean_error_in_std']:.1e});"
            f" the delta formula alone: {checks[name]['formula_max_error_in_std']:.1e} std")
        if checks[name]["formula_max_error_in_std"] > 1e-3 or checks[name]["packed_max_error_in_std"] > 0.05:
            raise SystemExit(f"{name}: the rebuilt features do not match the extractor's ({checks[name]})")

    return {
        "utterances": int(len(table)),
        "classes": list(FOUR_CLASSES),
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(FOUR_CLASSES)},
        "speakers": sorted(map(str, set(table["speaker"]))),
        "folds": {"split": config.split, "n_folds": config.n_folds, "validation": config.validation,
                  "seed": config.seed, "validation_by": config.validation_by,
                  "parts": [{"name": f.name, "train": len(f.train), "validation": len(f.validation),
                             "test": len(f.test)} for f in folds]},
        "extractors": {
            "logmel": {"key": extractors["logmel"].key(), "config": logmel_config,
                       "shape": list(full["logmel"][0].shape[1:]),
                       "carried": "the static plane (T, n_filters), float16",
                       "recomputed": f"{logmel_config['deltas']} delta plane(s), python_speech_features.delta"},
            "lld": {"key": extractors["lld"].key(), "config": lld_config, "base_dim": int(base_dim),
                    "shape": list(full["lld"][0].shape[1:]),
                    "carried": f"the {base_dim} LLDs and openSMILE's deltas ({carried['lld'][0].shape[1]}), float16",
                    "recomputed": "second-order deltas, python_speech_features.delta of openSMILE's deltas"
                                  if lld_config["deltas"] >= 2 else "nothing"},
        },
        "rebuild_checks": checks,
        "store": os.path.abspath(store_root),
    }


# ----------------------------------------------------------------------------- wheels

def pinned_versions():
    from importlib import metadata

    versions = {}
    for name in CARRIED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = FALLBACK_VERSIONS[name]
    return versions


def wheel_name(path):
    return normalise(os.path.basename(path).split("-")[0])


def download_wheels(folder):
    os.makedirs(folder, exist_ok=True)
    versions = pinned_versions()
    for path in glob.glob(os.path.join(folder, "*.whl")):  # one version of each: two stop the whole install
        name = wheel_name(path)
        version = os.path.basename(path).split("-")[1]
        if name not in map(normalise, CARRIED) or version != versions[next(c for c in CARRIED if normalise(c) == name)]:
            os.unlink(path)
    for name, version in versions.items():
        if any(wheel_name(p) == normalise(name) for p in glob.glob(os.path.join(folder, "*.whl"))):
            continue
        spec = f"{name}=={version}"
        result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                                 *TARGET, "-d", folder, spec], capture_output=True, text=True)
        if result.returncode != 0:  # an sdist alone (python_speech_features): a pure-Python wheel built here
            result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", folder, spec],
                                    capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"could not fetch a wheel of {spec}:\n{result.stderr[-2000:]}")
        log(f"wheel: {spec}")


def requirements(path):
    from packaging.requirements import Requirement

    with zipfile.ZipFile(path) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    needed = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is None or requirement.marker.evaluate(DEVICE_MARKERS):
                needed.append(requirement)
    return needed


def check_wheels(folder):
    """The three checks (module doc); returns their record, or exits naming what is missing."""
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    names = [wheel_name(w) for w in wheels]
    if len(set(names)) != len(names):
        raise SystemExit(f"two versions of one package among {wheels}")
    available = set(map(normalise, DEVICE_HAS)) | set(names)
    unmet = {os.path.basename(w): [str(r) for r in requirements(w) if normalise(r.name) not in available]
             for w in wheels}
    unmet = {k: v for k, v in unmet.items() if v}
    missing = sorted(set(map(normalise, CARRIED)) - set(names))
    if unmet or missing:
        raise SystemExit(f"wheels: not carried {missing}; requirements neither on the device nor carried: {unmet}")
    keras_wheel = next(w for w in wheels if wheel_name(w) == "keras")
    keras_needs = sorted(normalise(r.name) for r in requirements(keras_wheel))
    log(f"keras's Requires-Dist: {', '.join(keras_needs)}; on the device: "
        f"{', '.join(n for n in keras_needs if n in map(normalise, DEVICE_HAS))}; carried: "
        f"{', '.join(n for n in keras_needs if n in names)}")

    # The third-party distributions the training modules import beyond Keras, TensorFlow hidden.
    probe = ("import json, sys, importlib.metadata as md\nimport keras\nbefore = set(sys.modules)\n"
             + "".join(f"import {m}\n" for m in TRAIN_IMPORTS)
             + "tops = {m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)\n"
             "owners = md.packages_distributions()\n"
             "print(json.dumps(sorted({d for t in tops if t != 'msir_keras' for d in owners.get(t, ['?' + t])})))\n")
    environment = {**os.environ, "KERAS_BACKEND": "jax",
                   "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "tests", "no_tensorflow"), REPO])}
    result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the import probe failed:\n{result.stderr[-3000:]}")
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    lacking = [d for d in imported if normalise(d) not in available]
    log(f"the package's training modules import beyond keras: {', '.join(imported)}")
    if lacking:
        raise SystemExit(f"imported by the package but neither on the device nor carried: {lacking}")

    # pip's own check: these wheels install for CPython 3.12 on x86-64 Linux, offline, as on the device.
    with tempfile.TemporaryDirectory() as target:
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                 "--no-compile", "--only-binary=:all:", *TARGET, "--target", target, *wheels],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"simulated install for CPython 3.12 failed:\n{result.stderr[-3000:]}")
        installed = sorted(p for p in os.listdir(target) if p.endswith(".dist-info"))
    log(f"simulated `pip install --target` for cp312 x86-64: {', '.join(installed)}")
    return {"keras_requires": keras_needs, "imported_beyond_keras": imported, "simulated_install": installed,
            "device_package_list": "device/KINDS.md, read 2026-11-17"}


# ----------------------------------------------------------------------------- sizes

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def travelling_bytes():
    """Tracked and untracked-not-ignored files of this checkout: what travels besides the carried pack."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum(os.path.getsize(os.path.join(REPO, p.decode())) for p in listed
               if p and os.path.isfile(os.path.join(REPO, p.decode())))


def exclude_pack(out):
    """Adds the pack's folder to the repository's info/exclude (shared by worktrees) when it lies in the checkout:
    30 MiB must never be committed, and the device tool takes it through `carry`."""
    relative = os.path.relpath(os.path.abspath(out), REPO)
    if relative.startswith(".."):
        return
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return
    path, line = os.path.join(common, "info", "exclude"), f"/{relative}/"
    text = open(path).read() if os.path.exists(path) else ""
    if line not in text.splitlines():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as handle:
            handle.write(("\n" if text and not text.endswith("\n") else "") + line + "\n")
        log(f"added {line} to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data", "emodb")),
                        help="the EmoDB folder (holding wav/); default: ../shared/data/emodb beside the checkout")
    parser.add_argument("--store", default=None, help="feature store; default: this checkout's feature-store/, "
                        "else the main checkout's")
    parser.add_argument("--out", default=os.path.join(REPO, ".gpu"), help="the pack's folder (default: .gpu/)")
    parser.add_argument("--limit-mib", type=float, default=60.0, help="refuse a pack larger than this")
    args = parser.parse_args(argv)

    started = time.time()
    os.makedirs(args.out, exist_ok=True)
    exclude_pack(args.out)
    manifest_path = os.path.join(args.out, emodb_pack.MANIFEST_FILE)
    if os.path.exists(manifest_path):
        os.unlink(manifest_path)  # a pack is valid only once every check below has passed
    features = pack_features(args.root, args.store or default_store(), args.out)
    wheels_folder = os.path.join(args.out, emodb_pack.WHEELS_FOLDER)
    download_wheels(wheels_folder)
    checks = check_wheels(wheels_folder)

    wheels = [{"file": os.path.basename(w), "bytes": os.path.getsize(w), "sha256": sha256(w)}
              for w in sorted(glob.glob(os.path.join(wheels_folder, "*.whl")))]
    npz = os.path.join(args.out, emodb_pack.FEATURES_FILE)
    with zipfile.ZipFile(npz) as archive:  # compressed bytes of each array in the archive
        parts = {info.filename[:-4]: info.compress_size for info in archive.infolist()}
    sizes = {
        "features_npz": os.path.getsize(npz),
        "features_by_array": {k: v for k, v in parts.items() if v > 64 * 1024},
        "wheels": sum(w["bytes"] for w in wheels),
    }
    total = sizes["features_npz"] + sizes["wheels"]
    sizes["total"] = total
    log("")
    log("pack size:")
    for name, size in sizes["features_by_array"].items():
        log(f"  {name:24s} {size / MIB:7.2f} MiB")
    log(f"  {'emodb.npz (all)':24s} {sizes['features_npz'] / MIB:7.2f} MiB")
    for w in wheels:
        log(f"  {w['file'][:60]:60s} {w['bytes'] / MIB:5.2f} MiB")
    log(f"  {'wheels (all)':24s} {sizes['wheels'] / MIB:7.2f} MiB")
    log(f"  {'total':24s} {total / MIB:7.2f} MiB (limit {args.limit_mib:g} MiB)")
    tree = travelling_bytes()
    if tree is not None:
        sizes["checkout_travelling"] = tree
        log(f"  + this checkout's tracked and untracked-not-ignored files {tree / MIB:.2f} MiB = "
            f"{(tree + total) / MIB:.2f} MiB of the device tool's 64 MiB")
    if total > args.limit_mib * MIB:
        log(f"REFUSED: the pack is {total / MIB:.2f} MiB, above {args.limit_mib:g} MiB; no manifest written")
        raise SystemExit(2)

    manifest = {"format": emodb_pack.FORMAT, "corpus": "emodb", "root": os.path.abspath(args.root),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit(), **features,
                "wheels": wheels, "wheel_checks": checks, "sizes": sizes}
    with open(manifest_path + ".tmp", "w") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(manifest_path + ".tmp", manifest_path)
    log(f"wrote {args.out} in {time.time() - started:.0f} s; carry it: run(carry=['.gpu'], "
        "command='bash benchmarks/gpu/run.sh')")


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
