"""The paper's tables and figures from this package's own runs, on any corpus (`msir reproduce`).

Every row of Table 1 is a configuration of the same runner (`run_experiment`),
read from `paper_rows.json` (a user adds a row there, or passes their own file).
Each row runs the paper's task, one detector per target emotion, as its own
run folder per emotion::

    OUT/runs/<row key>/<emotion>/     a run folder (config.json, metrics.json, folds)
    OUT/runs/zeta-<z>/<emotion>/      Fig. 5's focal-loss weightings
    OUT/table1.{csv,md}               UAR and F1 per row, the paper's beside them
    OUT/table3.{csv,md}, table4.*     sensitivity, specificity per emotion
    OUT/fig2_uar.png ... fig5_zeta.png
    OUT/report.md                     all of it, with the settings it ran with

A row whose run folder has finished is read again, not retrained: a
reproduction stopped during row 8 starts again at row 8. Rows that share a
configuration (MSIR w/o FL is ACRNN (2D) + LLF-LSTM (3D-LLD) once the
wav2vec branch is off) share one run.

Light to import: TensorFlow is imported by the runner only when a row trains.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

from msir_keras.config import PAPER_ZETA, ExperimentConfig
from msir_keras.corpora import FOUR_CLASSES
from msir_keras.features.base import ConfigError
from msir_keras.reports import markdown_table
from msir_keras.runfolder import RunFolderError

ROWS_FILE = os.path.join(os.path.dirname(__file__), "paper_rows.json")
# The weightings the paper's text names for Fig. 5 (theta = 2); its figure's full grid is not in the text.
PAPER_ZETAS = (0.25, 0.55, 0.65, 0.75)
# The four methods of Tables 3 and 4, in the paper's order.
TABLE34_ROWS = ("acrnn-2d-llf-3d", "msir-ce", "llf-3d-w2v", "msir")
# Table 1's groups in the paper's claimed order: each should beat the one before.
ORDER = (("SVM baselines", ("compare-svm", "egemaps-svm")),
         ("one branch", ("acrnn-2d", "acrnn-3d", "w2v-en", "llf-3d")),
         ("two branches", ("acrnn-2d-llf-1d", "acrnn-2d-llf-2d", "acrnn-2d-llf-3d", "llf-3d-w2v")),
         ("MSIR (w/o FL)", ("msir-ce",)),
         ("MSIR", ("msir",)))
_ROW_FIELDS = {"key", "name", "paper", "settings", "needs_w2v", "not_reproduced"}


def load_rows(path=None):
    """Table 1's rows from a JSON file (defaults to the paper's, `paper_rows.json`), checked.

    Returns:
        list of dict: key, name, paper, and settings (ExperimentConfig
        fields) or not_reproduced (the reason).
    """
    path = path or ROWS_FILE
    try:
        with open(path) as handle:
            rows = json.load(handle)["rows"]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such rows file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a rows file ({error}); it holds {{\"rows\": [{{\"key\": ..., "
                          f"\"name\": ..., \"settings\": {{...}}}}, ...]}}, as {ROWS_FILE}") from None
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    seen = set()
    for index, row in enumerate(rows):
        where = f"{path}: row {index + 1} ({row.get('key', '?')})"
        if not {"key", "name"} <= set(row) or ("settings" in row) == ("not_reproduced" in row):
            raise ConfigError(f"{where}: needs key, name and either settings or not_reproduced")
        if set(row) - _ROW_FIELDS:
            raise ConfigError(f"{where}: unknown field(s) {sorted(set(row) - _ROW_FIELDS)}; known: {sorted(_ROW_FIELDS)}")
        unknown = set(row.get("settings", {})) - fields
        if unknown:
            raise ConfigError(f"{where}: {sorted(unknown)} are not experiment settings")
        if row.get("needs_w2v", "skip") not in ("skip", "drop"):
            raise ConfigError(f"{where}: needs_w2v is 'skip' or 'drop', got {row['needs_w2v']!r}")
        if row["key"] in seen:
            raise ConfigError(f"{where}: the key {row['key']!r} is used twice")
        seen.add(row["key"])
    return rows


def select_rows(rows, wanted):
    """The rows named in `wanted` (keys or 1-based numbers), in the table's order; all if None."""
    if not wanted:
        return list(rows)
    keys = [r["key"] for r in rows]
    chosen = set()
    for item in wanted:
        if item.isdigit() and 1 <= int(item) <= len(rows):
            chosen.add(keys[int(item) - 1])
        elif item in keys:
            chosen.add(item)
        else:
            raise ConfigError(f"--rows: no row {item!r}; the rows are 1-{len(rows)} or {', '.join(keys)}")
    return [r for r in rows if r["key"] in chosen]


def row_config(base, row, emotion, zeta=None):
    """One row's ExperimentConfig for one target emotion, or (None, reason) when it cannot run here.

    Returns:
        (ExperimentConfig or None, note): the note says what changed
        (the wav2vec branch dropped) or why the row is skipped.
    """
    if "not_reproduced" in row:
        return None, f"not reproduced: {row['not_reproduced']}"
    settings = dict(row["settings"])
    values = base.to_dict()
    for name in ("model_options", "logmel", "lld"):
        values[name] = {**values[name], **settings.pop(name, {})}
    values.update(settings, task="detection", targets=[emotion])
    note = ""
    if values.get("model", "msir") == "msir" and "w2v" in values["branches"] and base.wav2vec2 is None:
        if row.get("needs_w2v", "skip") == "skip":
            return None, "skipped: needs the wav2vec branch (--wav2vec2 off); give a local checkpoint folder"
        note = "without the wav2vec branch (--wav2vec2 off)"
    if values["model"] != "msir":
        values.update(loss="focal", zeta=None, tune=None)  # an SVM has neither: one config whatever the base
    elif values["loss"] == "focal":
        # Explicit, so MSIR's run is the same run as Fig. 5's point at the paper's zeta.
        values["zeta"] = PAPER_ZETA.get(emotion, 0.5) if zeta is None else float(zeta)
    else:
        values["zeta"] = None
    return ExperimentConfig.from_dict(values), note


@dataclasses.dataclass
class Part:
    """One run of the reproduction: a row (or Fig. 5 point) for one emotion."""

    row: str
    emotion: str
    config: ExperimentConfig | None
    folder: str | None
    note: str = ""
    same_as: str | None = None  # the row whose run this part shares


def plan(base, rows, emotions, out, zetas=PAPER_ZETAS):
    """Every part the reproduction needs, with run folders shared between identical configurations.

    Fig. 5's points are MSIR's row with a fixed zeta for every emotion;
    `zetas` empty leaves them out.
    """
    parts, folders = [], {}
    msir = next((r for r in rows if r["key"] == "msir"), None)
    sweep = [(f"zeta-{z:g}", msir, z) for z in zetas] if msir is not None else []
    for key, row, zeta in [(r["key"], r, None) for r in rows] + sweep:
        for emotion in emotions:
            config, note = row_config(base, row, emotion, zeta)
            if config is None:
                parts.append(Part(key, emotion, None, None, note))
                continue
            identity = json.dumps(config.to_dict(), sort_keys=True)
            if identity in folders:
                first = folders[identity]
                parts.append(Part(key, emotion, config, first.folder, note, same_as=first.same_as or first.row))
            else:
                folders[identity] = Part(key, emotion, config, os.path.join(out, "runs", key, emotion), note)
                parts.append(folders[identity])
    return parts


def finished_part(part, overwrite=False):
    """A part's metrics.json if its run folder has finished with the part's configuration, else None."""
    metrics = os.path.join(part.folder, "metrics.json")
    if not os.path.exists(metrics):
        return None
    saved = ExperimentConfig.load(os.path.join(part.folder, "config.json"))
    if saved.to_dict() != part.config.to_dict():
        if overwrite:
            return None
        raise RunFolderError(f"{part.folder} holds a run of another configuration than row {part.row} "
                             "now asks for; pass --overwrite to retrain it, or choose another --out")
    with open(metrics) as handle:
        return json.load(handle)


def run_part(part, log=print, overwrite=False, verbose=0):
    """Trains and tests a part now (resuming its `.partial` folder); returns its metrics.json."""
    from msir_keras.experiment import run_experiment

    log(f"{part.row} / {part.emotion}: training -> {part.folder}" + (f" ({part.note})" if part.note else ""))
    return run_experiment(part.config, part.folder, log=log, overwrite=overwrite, verbose=verbose)


def reproduce(base, out, rows=None, emotions=FOUR_CLASSES, zetas=PAPER_ZETAS, log=print, overwrite=False,
              verbose=0, train=True):
    """Runs (or reuses) every part, then writes the tables, figures and report.md into `out`.

    Args:
        base: ExperimentConfig. Corpus, split, folds, preset, recipe,
            wav2vec 2.0 source...: what every row shares.
        out: str. The results folder.
        rows: list of row dicts (`load_rows`), defaults to the paper's.
        emotions: the target emotions (a part of the paper's four).
        zetas: Fig. 5's weightings; empty: no Fig. 5.
        train: bool, defaults to True. False writes the tables and figures
            from the runs finished so far (while a reproduction still
            runs, say) and lists the others as not run yet.

    Returns:
        dict of DataFrames: table1, table3, table4, zeta.
    """
    rows = load_rows() if rows is None else rows
    unknown = [e for e in emotions if e not in FOUR_CLASSES]
    if unknown:
        raise ConfigError(f"--emotions: {unknown} are not among the paper's {', '.join(FOUR_CLASSES)}")
    os.makedirs(out, exist_ok=True)
    parts = plan(base, rows, list(emotions), out, zetas)
    results = {}
    for part in parts:  # finished runs are read once; another configuration's is refused before any row trains
        if part.config is not None and part.folder not in results:
            metrics = finished_part(part, overwrite)
            if metrics is not None:
                results[part.folder] = metrics
                log(f"{part.row} / {part.emotion}: finished before, reused ({part.folder})")
    for part in parts:
        if part.config is None:
            log(f"{part.row} / {part.emotion}: {part.note}")
        elif part.folder in results:
            continue
        elif train:
            results[part.folder] = run_part(part, log, overwrite, verbose)
        else:
            log(f"{part.row} / {part.emotion}: not run yet")
    return write_outputs(base, rows, parts, results, out, list(emotions), zetas, log)


# ----------------------------------------------------------------------------- tables


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
        record = {"key": row["key"], "row": row["name"]}
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
        record = {"key": row["key"], "row": row["name"]}
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
    w2v = "off (rows that need it are skipped, MSIR runs without it)" if base.wav2vec2 is None else base.wav2vec2
    lines = [
        f"# The paper's tables on {base.corpus}",
        "",
        f"- corpus: `{base.corpus}` at `{base.root}`; split `{base.split}`, test folds: {', '.join(folds) or 'none'}",
        f"- task: detection of {', '.join(emotions)} (one detector each; figures are means over them)",
        f"- MSIR preset `{base.preset}`, recipe `{base.recipe}` (learning rate "
        + ("searched per fold on validation speakers, the paper's grid" if base.tune else f"{base.learning_rate:g}")
        + f", batch {base.batch_size}, up to {base.epochs} epochs, patience {base.patience}), seed {base.seed}",
        f"- wav2vec 2.0: {w2v}",
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
