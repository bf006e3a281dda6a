"""Late fusion against early + late fusion, from finished `--model fusion` runs (no training).

Each run is one seed of a fused detector whose MSIR members take either the
paper's branches (late fusion: MSIR + functionals classifier) or the
functionals branch too (`--branches cr,lld,func`: MSIR + F, early fusion,
late-fused with the same classifier). Per fold, from each fold's
`metrics.json`:

- validation (the choice): the out-of-fold UAR over the fold's training
  speakers, every training speaker held out once, of the fused detector at
  its chosen weight, of MSIR's part alone (weight 1: for MSIR + F, early
  fusion alone) and of the functionals classifier alone (weight 0);
- test: the same three on the held-out test speakers, and the fold's time.

Which variant is the default is decided by the mean validation figure,
over folds and seeds: the test figures are reported, not used to choose.

Usage: python tuning/early_vs_late.py --late RUN [RUN ...] --early RUN [RUN ...]
                                      [--out tuning/results/early-vs-late]
Writes OUT.json and OUT.md.
"""

import argparse
import glob
import json
import os

import pandas as pd

from msir_keras.reports import markdown_table


def fold_rows(run, variant):
    """One row per fold of a run: validation and test UARs, the choice and the time."""
    seed = json.load(open(os.path.join(run, "config.json")))["seed"]
    rows = []
    for path in sorted(glob.glob(os.path.join(run, "classification", "*", "metrics.json"))):
        report = json.load(open(path))
        weights = report["selection"]["msir_weight"]
        chosen = report["chosen"]
        rows.append({
            "variant": variant, "seed": seed, "fold": os.path.basename(os.path.dirname(path)),
            "val_fused": weights[f"{chosen['msir_weight']:g}"], "val_msir": weights["1"], "val_functionals": weights["0"],
            "test_fused": report["uar"], "test_msir": report["msir_uar"], "test_functionals": report["functionals_uar"],
            "msir_weight": chosen["msir_weight"], "functionals": f"{chosen['functionals']} C={chosen['C']:g}",
            "minutes": report["seconds"] / 60,
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--late", nargs="+", required=True, help="runs of --model fusion (MSIR's branches)")
    parser.add_argument("--early", nargs="+", required=True, help="runs of --model fusion --branches cr,lld,func")
    parser.add_argument("--out", default="tuning/results/early-vs-late")
    args = parser.parse_args(argv)
    rows = [row for run in args.late for row in fold_rows(run, "late")]
    rows += [row for run in args.early for row in fold_rows(run, "early+late")]
    folds = pd.DataFrame(rows)
    figures = ["val_fused", "val_msir", "val_functionals", "test_fused", "test_msir", "test_functionals"]
    summary = folds.groupby("variant")[figures + ["minutes"]].mean()
    summary["seeds"] = folds.groupby("variant")["seed"].nunique()
    summary["minutes"] = folds.groupby(["variant", "seed"])["minutes"].sum().groupby("variant").mean()
    per_seed = folds.groupby(["variant", "seed"])[["val_fused", "test_fused", "test_msir"]].mean().reset_index()
    default = summary["val_fused"].idxmax()
    text = ["# Late fusion against early + late fusion (EmoDB, 4 classes, 5 folds)", "",
            "Means over folds and seeds. `val_*`: out-of-fold UAR over each fold's training speakers (what "
            "chooses); `test_*`: the held-out speakers. `msir`: MSIR's part alone (for early+late: MSIR + F, "
            "early fusion alone); `minutes`: one run of five folds.", "",
            markdown_table(summary), "",
            f"Chosen by the validation figure: **{default}**.", "", "## Per seed", "", markdown_table(per_seed), "",
            "## Per fold", "", markdown_table(folds)]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(f"{args.out}.md", "w") as handle:
        handle.write("\n".join(text) + "\n")
    with open(f"{args.out}.json", "w") as handle:
        json.dump({"summary": summary.reset_index().to_dict("records"), "chosen": default,
                   "folds": folds.to_dict("records")}, handle, indent=2)
    print("\n".join(text[:8]))


if __name__ == "__main__":
    main()
