"""What each part of the fused detector is worth, from finished `--model fusion` runs (no training).

For each run (one seed each) and fold, from the files the run wrote
(`selection.csv`: the training utterances' out-of-fold probabilities;
`predictions.csv`: the test utterances' probabilities of each part) and
the run's feature store, it scores on the test speakers:

- the run's fused detector, MSIR's part alone, the functionals classifier alone;
- the fused detector with each functional set imposed (ComParE, eGeMAPS,
  both; C still chosen by leave-one-speaker-out on the training speakers);
- the fused detector with the weight fixed at 0.5 instead of chosen;
- across runs (seeds): the fused detector whose MSIR part averages every
  seed's members (a seed ensemble: its weight chosen again on the averaged
  out-of-fold probabilities), and that MSIR ensemble alone.

Every choice is made again exactly as `msir_keras.fusion` makes it: on the
training speakers only; the test speakers are predicted, never used to choose.
The figures are test-fold figures: they describe what each part is worth;
choosing a default from them (a set, a weight) would let the test folds
decide it, and is not what they are for.

Usage: python tuning/fusion_ablation.py RUN [RUN ...] [--out tuning/results/fusion-ablation]
Writes OUT.json and OUT.md.
"""

import argparse
import json
import os

import numpy as np
import pandas as pd

from msir_keras.config import ExperimentConfig
from msir_keras.experiment import prepare
from msir_keras.fusion import FUNCTIONAL_SETS, logistic_regression, choose_weight, select_functionals
from msir_keras.metrics import uar
from msir_keras.reports import markdown_table
from msir_keras.training import target_labels


def _columns(frame, prefix, classes):
    return frame[[f"{prefix}{c}" for c in classes]].to_numpy(float)


def _fold_files(run, fold, row_of, train, test):
    """A run's selection.csv and predictions.csv of one fold, in the corpus table's row order."""
    folder = os.path.join(run, "classification", fold.name)
    selection = pd.read_csv(os.path.join(folder, "selection.csv"))
    predictions = pd.read_csv(os.path.join(folder, "predictions.csv"))
    return (selection.set_index(selection["path"].map(row_of)).loc[train],
            predictions.set_index(predictions["path"].map(row_of)).loc[test])


def _best_c(scores, name):
    """The C the run's selection found best for one set (its `selection.functionals` scores; ties: smaller C)."""
    tried = {float(key.split("C=")[1]): value for key, value in scores.items() if key.split(" C=")[0] == name}
    return max(tried, key=lambda c: (tried[c], -c))


def _set_probabilities(features, labels, speakers, train, test, name, classes, c):
    """Out-of-fold (training) and test probabilities of the logistic regression on one imposed set."""
    x = {part: features[part] for part in FUNCTIONAL_SETS[name]}
    _, c, _, oof = select_functionals({k: v[train] for k, v in x.items()}, labels[train], speakers[train],
                                      len(classes), sets=(name,), c_grid=(c,))
    stacked = np.concatenate([x[part] for part in FUNCTIONAL_SETS[name]], axis=1)
    model = logistic_regression(c).fit(stacked[train], labels[train])
    test_probabilities = np.zeros((len(test), len(classes)))
    test_probabilities[:, model.classes_] = model.predict_proba(stacked[test])
    return oof, test_probabilities


def fused_uar(labels_train, msir_oof, functionals_oof, labels_test, msir_test, functionals_test, classes,
              weight=None):
    if weight is None:
        weight, _ = choose_weight(labels_train, msir_oof, functionals_oof, len(classes))
    mixed = weight * msir_test + (1 - weight) * functionals_test
    return uar(labels_test, mixed.argmax(axis=1), len(classes)), weight


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "fusion-ablation"))
    args = parser.parse_args()

    config = ExperimentConfig.load(os.path.join(args.runs[0], "config.json"))
    table, data, folds, _ = prepare(config, log=lambda line: None)
    labels, classes = target_labels(config, table, "classification")
    speakers = table["speaker"].astype(str).to_numpy()
    features = {name: np.stack(data.features[name]) for name in ("compare", "egemaps") if name in data.features}
    sets = [name for name, parts in FUNCTIONAL_SETS.items() if all(p in features for p in parts)]
    row_of = {path: i for i, path in enumerate(table["path"])}

    rows, seeds_msir = [], {}
    for fold in folds:
        train = np.sort(np.concatenate([fold.train, fold.validation]))
        test = np.asarray(fold.test)
        # The leave-one-speaker-out scores of every set and C are in the run's metrics (the same for every
        # seed: the classifier does not depend on MSIR); only the best C of each set is fitted again.
        with open(os.path.join(args.runs[0], "classification", fold.name, "metrics.json")) as handle:
            scores = json.load(handle)["selection"]["functionals"]
        imposed = {name: _set_probabilities(features, labels, speakers, train, test, name, classes,
                                            _best_c(scores, name)) for name in sets}
        for run in args.runs:
            seed = ExperimentConfig.load(os.path.join(run, "config.json")).seed
            selection, predictions = _fold_files(run, fold, row_of, train, test)  # the runs share the folds
            msir_oof, msir_test = _columns(selection, "msir_p_", classes), _columns(predictions, "msir_p_", classes)
            functionals_oof = _columns(selection, "functionals_p_", classes)
            functionals_test = _columns(predictions, "functionals_p_", classes)
            seeds_msir.setdefault(fold.name, []).append((msir_oof, msir_test))
            row = {"fold": fold.name, "seed": seed,
                   "fused": uar(labels[test], _columns(predictions, "p_", classes).argmax(1), len(classes)),
                   "msir part alone": uar(labels[test], msir_test.argmax(1), len(classes)),
                   "functionals alone": uar(labels[test], functionals_test.argmax(1), len(classes))}
            row["fused, weight 0.5"] = fused_uar(labels[train], msir_oof, functionals_oof, labels[test], msir_test,
                                                 functionals_test, classes, weight=0.5)[0]
            for name, (oof, probabilities) in imposed.items():
                row[f"fused, {name} only"] = fused_uar(labels[train], msir_oof, oof, labels[test], msir_test,
                                                       probabilities, classes)[0]
                row[f"functionals alone, {name}"] = uar(labels[test], probabilities.argmax(1), len(classes))
            rows.append(row)
        if len(args.runs) > 1:  # the seeds' MSIR members averaged, the weight chosen again
            selection, predictions = _fold_files(args.runs[0], fold, row_of, train, test)
            msir_oof = np.mean([oof for oof, _ in seeds_msir[fold.name]], axis=0)
            msir_test = np.mean([t for _, t in seeds_msir[fold.name]], axis=0)
            score, weight = fused_uar(labels[train], msir_oof, _columns(selection, "functionals_p_", classes),
                                      labels[test], msir_test, _columns(predictions, "functionals_p_", classes),
                                      classes)
            rows.append({"fold": fold.name, "seed": "ensemble", "fused": score, "chosen weight": weight,
                         "msir part alone": uar(labels[test], msir_test.argmax(1), len(classes))})

    frame = pd.DataFrame(rows)
    single = frame[frame["seed"] != "ensemble"]
    summary = {
        "runs": args.runs,
        "per_fold": frame.to_dict(orient="records"),
        "mean_over_folds_per_seed": single.drop(columns="fold").groupby("seed").mean(numeric_only=True)
        .to_dict(orient="index"),
        "mean_over_folds_and_seeds": single.drop(columns=["fold", "seed"]).mean(numeric_only=True).to_dict(),
        "std_of_seed_means": single.drop(columns="fold").groupby("seed").mean(numeric_only=True)
        .std(ddof=0).to_dict(),
    }
    ensemble = frame[frame["seed"] == "ensemble"]
    if len(ensemble):
        summary["seed_ensemble_mean_over_folds"] = ensemble[["fused", "msir part alone"]].mean().to_dict()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(summary, handle, indent=2, default=str)
    means = single.drop(columns=["fold", "chosen weight"], errors="ignore").groupby("seed").mean(numeric_only=True).T
    means["mean"] = means.mean(axis=1)
    text = ["Mean UAR over the five test folds, per seed (columns) and over seeds:", "",
            markdown_table(means.rename_axis("variant")), ""]
    if len(ensemble):
        text += ["Seed ensemble (every seed's MSIR members averaged, weight chosen again), per fold:", "",
                 markdown_table(ensemble[["fold", "fused", "msir part alone", "chosen weight"]]), ""]
    with open(args.out + ".md", "w") as handle:
        handle.write("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
