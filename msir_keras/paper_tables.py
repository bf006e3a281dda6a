"""The paper's tables (1, 3, 4), Fig. 5's zeta table and the report, from `msir reproduce`'s runs.

`reproduce.reproduce` runs (or reuses) the parts; this module reads their
metrics.json files into DataFrames (fold means and standard deviations in %,
the paper's figures beside them) and writes the CSV, Markdown, figures and
report.md.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from msir_keras.reports import markdown_table

# The four methods of Tables 3 and 4, in the paper's order.
TABLE34_ROWS = ("acrnn-2d-llf-3d", "msir-ce", "llf-3d-w2v", "msir")
# Table 1's groups in the paper's claimed order: each should beat the one before.
ORDER = (("SVM baselines", ("compare-svm", "egemaps-svm")),
         ("one branch", ("acrnn-2d", "acrnn-3d", "w2v-en", "llf-3d")),
         ("two branches", ("acrnn-2d-llf-1d", "acrnn-2d-llf-2d", "acrnn-2d-llf-3d", "llf-3d-w2v")),
         ("MSIR (w/o FL)", ("msir-ce",)),
         ("MSIR", ("msir",)))


def _fold_figures(metrics, emotion, figure):
    """{fold: figure} of one emotion's run (None where undefined)."""
    return {fold: values[figure] for fold, values in metrics["emotions"][emotion]["folds"].items()}


def row_figures(parts, results, row, figure, emotions):
    """A row's figure per emotion per fold, as a DataFrame (folds x emotions, NaN where missing)."""
    columns = {}
    for part in parts:
        if part.row == row and part.folder in results and part.emotion in emotions:
            values = _fold_figures(results[part.folder], part.emotion, figure)
            columns[part.emotion] = pd.Series({k: np.nan if v is None else v for k, v in values.items()}, dtype=float)
    return pd.DataFrame(columns, columns=[e for e in emotions if e in columns])


def _mean_std(frame):
    """Mean and standard deviation over folds of the per-fold mean over emotions (in %)."""
    per_fold = frame.mean(axis=1, skipna=True) * 100
    std = float(per_fold.std(ddof=1)) if len(per_fold) > 1 else np.nan
    return float(per_fold.mean()), std


def upstream_label(config):
    """How a table names the upstream a row's third branch read: None for the paper's (wav2vec 2.0 base,
    last layer) or none; else the checkpoint's name and layer, e.g. "wavlm-base-plus, every layer"."""
    from msir_keras.features import DEFAULT_CHECKPOINT

    if config is None or config.model not in ("msir", "fusion") or config.wav2vec2 is None \
            or "w2v" not in config.branches:
        return None  # an SVM, or a row without the third branch
    layer = config.wav2vec2_layer
    if config.wav2vec2 == DEFAULT_CHECKPOINT and layer is None:
        return None
    name = os.path.basename(config.wav2vec2.rstrip("/")) or config.wav2vec2
    return name + ("" if layer is None else ", every layer" if layer == "all" else f", layer {layer}")


def _row_name(row, parts):
    """The paper's name of a row, or, where its runs read another upstream than the paper's, that one's."""
    labels = sorted({label for p in parts if p.row == row["key"] for label in [upstream_label(p.config)] if label})
    if not labels:
        return row["name"]
    return row["name"].replace("w2v-EN", labels[0]) if "w2v-EN" in row["name"] else f"{row['name']} ({labels[0]})"


def table1(rows, parts, results, emotions):
    """Table 1: UAR and F1 (%, mean over emotions and folds, std over folds) per row, the paper's beside them."""
    records = []
    for row in rows:
        own = [p for p in parts if p.row == row["key"]]
        notes = sorted({p.note for p in own if p.note})
        shared = sorted({p.same_as for p in own if p.same_as})
        if shared:
            notes.append("same configuration as " + ", ".join(shared))
        waiting = [p.emotion for p in own if p.config is not None and p.folder not in results]
        if waiting:
            notes.append("not run yet: " + ", ".join(waiting))
        record = {"key": row["key"], "row": _row_name(row, parts)}
        frames = {figure: row_figures(parts, results, row["key"], figure, emotions) for figure in ("uar", "f1")}
        for figure, frame in frames.items():
            mean, std = _mean_std(frame) if not frame.empty else (np.nan, np.nan)
            paper = row.get("paper", {}).get(figure, np.nan)
            record.update({f"{figure.upper()}": mean, f"{figure.upper()} std": std,
                           f"paper {figure.upper()}": paper, f"Δ{figure.upper()}": mean - paper})
        record["folds"], record["emotions"] = (int(n) for n in frames["uar"].shape)
        record["note"] = "; ".join(notes)
        records.append(record)
    return pd.DataFrame(records).set_index("key")


def table34(rows, parts, results, emotions, figure):
    """Table 3 (sensitivity) or 4 (specificity), %: the four methods per emotion, the paper's beside them."""
    records = []
    for row in sorted((r for r in rows if r["key"] in TABLE34_ROWS), key=lambda r: TABLE34_ROWS.index(r["key"])):
        frame = row_figures(parts, results, row["key"], figure, emotions) * 100
        record = {"key": row["key"], "row": _row_name(row, parts)}
        for emotion in emotions:
            mean = float(frame[emotion].mean()) if emotion in frame else np.nan
            paper = row.get("paper", {}).get(figure, {}).get(emotion, np.nan)
            record.update({emotion: mean, f"{emotion} paper": paper, f"{emotion} Δ": mean - paper})
        records.append(record)
    return pd.DataFrame(records).set_index("key") if records else pd.DataFrame()


def zeta_table(parts, results, emotions, zetas):
    """Fig. 5's data: UAR (%) per emotion per zeta, and cross-entropy's (MSIR w/o FL) as the reference."""
    records = []
    for label, row in [(f"{z:g}", f"zeta-{z:g}") for z in zetas] + [("crossentropy", "msir-ce")]:
        frame = row_figures(parts, results, row, "uar", emotions) * 100
        records.append({"zeta": label, **{e: float(frame[e].mean()) if e in frame else np.nan for e in emotions}})
    return pd.DataFrame(records).set_index("zeta")


def ordering(table):
    """Whether each group of Table 1 beats the one before on mean UAR: [(group, mean UAR, holds)].

    Only rows with every emotion's runs count (a row still running is left out).
    """
    if "emotions" in table:
        table = table[table["emotions"] == table["emotions"].max()]
    steps, previous = [], None
    for group, keys in ORDER:
        values = table.loc[[k for k in keys if k in table.index], "UAR"].dropna()
        if values.empty:
            continue
        mean = float(values.mean())
        steps.append((group, mean, None if previous is None else mean > previous))
        previous = mean
    return steps


# ----------------------------------------------------------------------------- outputs


def _markdown(table, digits=1):
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            signed = str(column).startswith("Δ") or str(column).endswith(" Δ")
            shown[column] = [("n/a" if not np.isfinite(v) else f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}")
                             for v in shown[column]]
    return markdown_table(shown)


def write_outputs(base, rows, parts, results, out, emotions, zetas, log=print):
    """Writes the tables (CSV and Markdown), the figures and report.md; returns the tables."""
    from msir_keras import plots

    tables = {"table1": table1(rows, parts, results, emotions),
              "table3": table34(rows, parts, results, emotions, "sensitivity"),
              "table4": table34(rows, parts, results, emotions, "specificity")}
    if zetas and any(p.row.startswith("zeta-") and p.folder in results for p in parts):
        tables["zeta"] = zeta_table(parts, results, emotions, zetas)
    for name, table in tables.items():
        if not table.empty:
            table.to_csv(os.path.join(out, f"{name}.csv"), float_format="%.2f")
            with open(os.path.join(out, f"{name}.md"), "w") as handle:
                handle.write(_markdown(table) + "\n")
    figures = {}
    pair = {key: {f: row_figures(parts, results, key, f, emotions) * 100 for f in ("uar", "f1")}
            for key in ("msir-ce", "msir")}
    if all(not pair[k]["uar"].empty for k in pair):
        names = {r["key"]: r["name"] for r in rows}
        for number, figure, label in ((2, "uar", "UAR (%)"), (3, "f1", "F1 of the positive class (%)")):
            figures[f"fig{number}"] = plots.plot_grouped_bars(
                {names[k]: pair[k][figure] for k in ("msir-ce", "msir")}, os.path.join(out, f"fig{number}_{figure}.png"),
                ylabel=label, title=f"Fig. {number}: {label.split(' (')[0]} per emotion, MSIR with and without focal loss")
    msir = [p for p in parts if p.row == "msir" and p.folder in results]
    if msir:
        matrices = {p.emotion: _summed_confusion(p.folder, p.emotion) for p in msir}
        figures["fig4"] = plots.plot_detection_confusions(
            matrices, os.path.join(out, "fig4_confusion.png"),
            title="Fig. 4: MSIR's confusion matrices per emotion (recall and count, all test folds)")
    if "zeta" in tables:
        figures["fig5"] = plots.plot_zeta(tables["zeta"], os.path.join(out, "fig5_zeta.png"),
                                          title="Fig. 5: UAR against the focal weighting zeta (theta = 2)")
    report = report_markdown(base, parts, results, tables, figures, out, emotions)
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write(report)
    log(_markdown(tables["table1"].drop(columns=["note"])))
    log(f"tables, figures and report.md written to {out}")
    return tables


def _summed_confusion(folder, emotion):
    """An emotion's 2x2 confusion (negative, positive) summed over the test folds of its run."""
    total = np.zeros((2, 2), dtype=int)
    base = os.path.join(folder, emotion)
    for fold in sorted(os.listdir(base)):
        path = os.path.join(base, fold, "metrics.json")
        if os.path.exists(path):
            with open(path) as handle:
                total += np.asarray(json.load(handle)["confusion"], dtype=int)
    return total


def report_markdown(base, parts, results, tables, figures, out, emotions):
    """report.md: what ran, how, the tables against the paper's, the figures, and the paper's ordering."""
    folds = sorted({f for p in parts if p.folder in results for f in results[p.folder]["emotions"][p.emotion]["folds"]})
    w2v = "off (rows that need it are skipped, MSIR runs without it)" if base.wav2vec2 is None else (
        f"{base.wav2vec2}" + ("" if base.wav2vec2_layer is None else f", layer {base.wav2vec2_layer}")
        + ("" if upstream_label(base) is None else " (not the paper's wav2vec 2.0 base: the rows name it)"))
    lines = [
        f"# The paper's tables on {base.corpus}",
        "",
        f"- corpus: `{base.corpus}` at `{base.root}`; split `{base.split}`, test folds: {', '.join(folds) or 'none'}",
        f"- task: detection of {', '.join(emotions)} (one detector each; figures are means over them)",
        f"- MSIR preset `{base.preset}`, recipe `{base.recipe}` (learning rate "
        + ("searched per fold on validation speakers, the paper's grid" if base.tune else f"{base.learning_rate:g}")
        + f", batch {base.batch_size}, up to {base.epochs} epochs, patience {base.patience}), seed {base.seed}",
        f"- upstream of the third branch: {w2v}",
        "- every figure in %; Δ is this run minus the paper (IEMOCAP, session 5). Another corpus, or fewer folds, "
        "gives other numbers: the comparison is of orderings, not of values.",
        "",
        "## Table 1: UAR and F1 per approach",
        "",
        _markdown(tables["table1"]),
        "",
        "### The paper's ordering (mean UAR per group)",
        "",
    ]
    for group, mean, holds in ordering(tables["table1"]):
        verdict = "" if holds is None else ("  (above the group before: holds)" if holds else
                                            "  (not above the group before: does not hold here)")
        lines.append(f"- {group}: {mean:.1f}{verdict}")
    for number, name in ((3, "sensitivity (TPR)"), (4, "specificity (TNR)")):
        table = tables[f"table{number}"]
        if not table.empty:
            lines += ["", f"## Table {number}: {name} per emotion", "", _markdown(table)]
    titles = {"fig2": "Fig. 2: UAR per emotion", "fig3": "Fig. 3: F1 per emotion",
              "fig4": "Fig. 4: MSIR's confusion matrices", "fig5": "Fig. 5: UAR against zeta"}
    for key, path in figures.items():
        lines += ["", f"## {titles[key]}", "", f"![{titles[key]}]({os.path.relpath(path, out)})"]
    if "zeta" in tables:
        lines += ["", _markdown(tables["zeta"])]
    skipped = sorted({(p.row, p.note) for p in parts if p.config is None}
                     | {(p.row, f"not run yet ({p.emotion})") for p in parts if p.config is not None
                        and p.folder not in results})
    if skipped:
        lines += ["", "## Not run here", ""] + [f"- {row}: {note}" for row, note in skipped]
    return "\n".join(lines) + "\n"
