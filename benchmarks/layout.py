"""The package's layout, measured: import cycles, module sizes, and how a run's calls move between stages.

Static (the source files): every `import` of one msir_keras module by
another, at module level and inside functions; the cycles among them
(strongly connected components of more than one module); the modules over
300 lines.

Dynamic (one tiny `msir train` run, traced): every call from a function of
one msir_keras module into another's. Modules are ranked by the stage of
the data flow they hold (audio -> features -> dataset -> model -> metrics
-> tables; the orchestrators above; `STAGES` below). A call into a module
of a higher stage climbs back up; a clean layout has none (a lambda handed
down and called back is not counted). Counted: the
modules the run enters, the calls between modules, and the climbs, each
once per (caller, callee) pair and in total.

Usage: python benchmarks/layout.py [--out benchmarks/results/layout.json]
Another checkout (for a before/after): PYTHONPATH=/path/to/it python benchmarks/layout.py --out ...
Needs ../shared/data/emodb beside the checkout (the run trains on 32 of its files).
"""

import argparse
import ast
import collections
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EMODB = os.path.join(HERE, "..", "..", "shared", "data", "emodb")
# Stage of each module by its first name part: lower stages come first in the data flow.
STAGES = {
    0: ("__init__", "presets", "limits"),  # sizes and ranges: read by every stage
    1: ("audio", "corpora"),
    2: ("features", "config"),  # a run's settings build its extractors
    3: ("data", "batches"),
    4: ("layers", "augment", "branches", "backbone", "weighted_sum", "preprocessor", "model", "losses", "metrics",
        "legacy"),
    5: ("engine", "fusion", "baselines", "tuning"),
    6: ("serving", "export", "detector", "plots", "reports", "runfolder", "selection"),
    7: ("training",),
    8: ("experiment", "evaluate", "compare", "paper_tables"),
    9: ("reproduce",),
    10: ("cli", "service"),
}
STAGE = {name: stage for stage, names in STAGES.items() for name in names}


def module_files(package):
    """{dotted module name: path} of every .py file under the package folder."""
    files = {}
    for folder, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(package))[:-3].replace(os.sep, ".")
                files[relative.removesuffix(".__init__")] = path
    return files


def imports(files):
    """{module: {imported msir_keras module}}, at module level and all (function level included)."""
    top, every = collections.defaultdict(set), collections.defaultdict(set)
    for module, path in files.items():
        tree = ast.parse(open(path).read())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                # `from package import submodule` reads the submodule (its package's __init__ runs first,
                # as for any submodule: not counted); `from module import name` reads the module.
                names = submodules or [base]
            for name in names:
                target = max((m for m in files if name == m or name.startswith(m + ".")), key=len, default=None)
                if target and target != module:
                    every[module].add(target)
                    if id(node) not in nested:
                        top[module].add(target)
    return top, every


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def stage(module):
    return STAGE.get(module.split(".")[1] if "." in module else "__init__", 0)


def trace_run(package):
    """The calls between msir_keras modules during one tiny `msir train` (two folds, one epoch)."""
    import pandas as pd

    from msir_keras.cli import main

    folder = tempfile.mkdtemp(prefix="msir-layout-")
    wavs = sorted(os.listdir(os.path.join(EMODB, "wav")))
    rows = []
    for name in wavs:  # 4 speakers x 4 classes x 2 files
        speaker, label = name[:2], {"W": "angry", "F": "happy", "N": "neutral", "T": "sad"}.get(name[5])
        if speaker in ("03", "08", "09", "10") and label and sum(r[2] == speaker and r[1] == label for r in rows) < 2:
            rows.append((os.path.join(EMODB, "wav", name), label, speaker))
    manifest = os.path.join(folder, "corpus.csv")
    pd.DataFrame(rows, columns=["path", "label", "speaker"]).to_csv(manifest, index=False)
    prefix = os.path.dirname(package) + os.sep
    calls = collections.Counter()
    names = {}

    def name_of(code):
        path = code.co_filename
        if path not in names:
            names[path] = None
            if path.startswith(prefix + "msir_keras"):
                names[path] = os.path.relpath(path, prefix)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        return names[path]

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = name_of(frame.f_code)
        caller = frame.f_back and name_of(frame.f_back.f_code)
        # A lambda handed down and called back (a writer given to `atomic_write`) is not a step up.
        if callee and caller and callee != caller and frame.f_code.co_name != "<lambda>":
            calls[(caller, callee)] += 1

    arguments = ["train", "--corpus", "manifest", "--root", manifest, "--wav2vec2", "off", "--preset", "tiny",
                 "--folds", "2", "--epochs", "1", "--batch-size", "16", "--no-savedmodel",
                 "--store", os.path.join(folder, "store"), "--out", os.path.join(folder, "run")]
    sys.setprofile(profile)
    try:
        status = main(arguments)
    finally:
        sys.setprofile(None)
    if status != 0:
        raise SystemExit(f"the traced run failed ({status})")
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "layout.json"))
    parser.add_argument("--no-trace", action="store_true", help="the static part only")
    args = parser.parse_args()
    import msir_keras

    package = os.path.dirname(os.path.abspath(msir_keras.__file__))
    files = module_files(package)
    top, every = imports(files)
    sizes = {m: sum(1 for _ in open(p)) for m, p in files.items()}
    result = {
        "package": package,
        "modules": len(files),
        "import_cycles_module_level": cycles(top),
        "import_cycles_with_function_imports": cycles(every),
        "modules_over_300_lines": {m: n for m, n in sorted(sizes.items(), key=lambda x: -x[1]) if n > 300},
    }
    if not args.no_trace:
        calls = trace_run(package)
        climbs = {f"{a} -> {b}": n for (a, b), n in calls.items() if stage(b) > stage(a)}
        result["run"] = {
            "modules_entered": len({m for pair in calls for m in pair}),
            "calls_between_modules": sum(calls.values()),
            "module_pairs": len(calls),
            "climbs_pairs": len(climbs),
            "climbs_calls": sum(climbs.values()),
            "climbs": dict(sorted(climbs.items(), key=lambda x: -x[1])),
        }
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
