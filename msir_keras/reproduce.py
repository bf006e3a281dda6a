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

(the tables, figures and report are written by `msir_keras.paper_tables`)

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

from msir_keras.config import PAPER_ZETA, ExperimentConfig
from msir_keras.corpora import FOUR_CLASSES
from msir_keras.features.base import ConfigError
from msir_keras.paper_tables import write_outputs
from msir_keras.runfolder import RunFolderError

ROWS_FILE = os.path.join(os.path.dirname(__file__), "paper_rows.json")
# The weightings the paper's text names for Fig. 5 (theta = 2); its figure's full grid is not in the text.
PAPER_ZETAS = (0.25, 0.55, 0.65, 0.75)
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
