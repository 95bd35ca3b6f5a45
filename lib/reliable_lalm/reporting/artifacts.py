"""The paper's artifacts, each built by exactly one function named after it.

Why one home: the notebooks write ``tables/<profile>/`` and ``figures/<profile>/`` and the tests
assert the paper's layouts; when each built its own version, the shipped ``table10.md`` did not
look like what the tests checked. Here the notebooks, the tests and :func:`paper_table` (the
paper's own numbers) share one layout engine, so ours and the paper's line up cell by cell.

=========== ================================================ =========================================
artifact    built from                                        layout
=========== ================================================ =========================================
Table 1     score dicts by method (``rlalm score`` output)    Method x (modality, Acc%/Tru%/Rel%)
Table 2     the same, with gains over the baseline            Method x (modality, ΔCon%/ΔHum%/RGI)
Table 3     score dicts by (model, "no"/"yes")                (Models, IDK Prompting) x Table 1's columns
Table 10    cross-modal cells (:meth:`CrossModal.results`)    Training Modality x Table 1's columns, "-" on train = test
Table 11    the same                                          Training Modality x Table 2's columns, "-" on train = test
Table 12    the same                                          Training Modality x ("Rejection Rate (%)", IDK Dataset / modality)
Figure 3    the same                                          RGI heatmap, Training Modality x Test Modality
Figure 4    the LoRA-alpha sweep (:meth:`CrossModal.alpha_sweep`) rejection, reliability, RGI against alpha
Figure 5    IDK shares by K (:meth:`Experiment.idk_fractions`) bars of the IDK share for K@N, K = 1..N
=========== ================================================ =========================================

Units: the inputs hold fractions in [0, 1]; every DataFrame built here holds the numbers as the
paper prints them (rates and ΔCon/ΔHum in percent, RGI as a plain number). Modality groups come
from the data (a benchmark's modalities, in the order its scores or cells list them; MMAR has
seven); the paper's three keep the labels the paper prints ("Sound"), others are title-cased.
A figure builder returns a :class:`PaperFigure`: the drawn figure and the numbers it draws, which
``reporting.save_figure(..., data=...)`` writes beside it so a rerun can be checked by its data.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import pandas as pd

from reliable_lalm.core.scoring import NOT_RUN_KEY
from reliable_lalm.reporting.reference import load_reference
from reliable_lalm.reporting.tables import (NOT_APPLICABLE_ATTR, ROW_NOTES_ATTR, _number, modality_label,
                                            plot_alpha_ablation, plot_idk_threshold, plot_rgi_heatmap)

PAPER_MODALITIES: tuple[str, ...] = ("sound", "music", "speech")
TOTAL = "total"
METRIC_LABELS: dict[str, str] = {"acc": "Acc%", "tru": "Tru%", "rel": "Rel%", "rej": "Rej%",
                                 "d_con": "ΔCon%", "d_hum": "ΔHum%", "rgi": "RGI"}
PERCENT_METRICS = frozenset({"acc", "tru", "rel", "rej", "d_con", "d_hum"})
CONVENTIONS = ("subset", "class")
METHOD_INDEX = "Method"
TABLE3_INDEX = ("Models", "IDK Prompting")
TRAINING_INDEX = "Training Modality"
TEST_INDEX = "Test Modality"
REJECTION_HEADER = "Rejection Rate (%)"
IDK_DATASET_LABEL = "IDK Dataset"
_ACC_TRU_REL = (("acc", "acc"), ("tru", "tru"), ("rel", "rel"))


class PaperFigure(NamedTuple):
    """A drawn paper figure and the numbers it shows (paper units)."""

    figure: Any
    data: pd.DataFrame


# ------------------------------------------------------------------------------------------------
# The layout engine (shared by our tables and the paper's)
# ------------------------------------------------------------------------------------------------

def score_group(score: Mapping[str, Any], group: str) -> Mapping[str, Any] | None:
    """The numbers of one modality (``score["by_task"][group]``) or of the total (the top level).

    Also accepts :func:`reliable_lalm.core.metrics.summarize` output (``{"total": ..., "by_task": ...}``).
    """
    if group == TOTAL:
        total = score.get(TOTAL)
        return total if isinstance(total, Mapping) and "acc" not in score else score
    return (score.get("by_task") or {}).get(group)


def _metric(group: Mapping[str, Any] | None, key: str, metric: str) -> float:
    """Paper units: percent for rates and deltas (``metric`` names the kind), RGI as is."""
    if not group:
        return math.nan
    value = _number(group.get(key))
    return 100.0 * value if metric in PERCENT_METRICS else value


def _index(labels: Sequence[Any], index_name: str | Sequence[str] | None) -> pd.Index:
    if labels and all(isinstance(k, tuple) for k in labels):
        names = list(index_name) if isinstance(index_name, (list, tuple)) else None
        return pd.MultiIndex.from_tuples(list(labels), names=names)
    return pd.Index(list(labels), name=index_name if isinstance(index_name, str) else None, dtype=object)


def _groups_of(rows: Mapping[Any, Mapping[str, Any]]) -> list[str]:
    """The modality groups the score dicts hold, in the order they list them (a benchmark's order:
    scoring orders ``by_task`` by the benchmark's modalities), then the total."""
    seen: dict[str, None] = {}
    for score in rows.values():
        for group in (score.get("by_task") or {}):
            seen.setdefault(group)
    return [*seen, TOTAL]


def _wide(rows: Mapping[Any, Mapping[str, Any]], metrics: Sequence[tuple[str, str]], groups: Sequence[str],
          skip: Mapping[Any, Sequence[str]] | None, index_name: str | Sequence[str] | None,
          labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """rows x (group label, metric label); ``metrics`` = (score key, metric kind); the cells of
    ``skip[row]`` print "-" (a cell the layout leaves empty on purpose), missing ones "n/a"."""
    columns = pd.MultiIndex.from_tuples([(modality_label(g), METRIC_LABELS[m]) for g in groups for _, m in metrics],
                                        names=["Modality", "Metric"])
    index = _index(list(labels) if labels is not None else list(rows), index_name)
    data, not_applicable = [], []
    for key, label in zip(rows, index):
        values = []
        for g in groups:
            skipped = g in (skip or {}).get(key, ())
            group = None if skipped else score_group(rows[key], g)
            for score_key, metric in metrics:
                values.append(math.nan if skipped else _metric(group, score_key, metric))
                if skipped:
                    not_applicable.append((label, (modality_label(g), METRIC_LABELS[metric])))
        data.append(values)
    df = pd.DataFrame(data, index=index, columns=columns, dtype=float)
    df.attrs[NOT_APPLICABLE_ATTR] = not_applicable
    return df


def _gain_metrics(convention: str) -> list[tuple[str, str]]:
    """Score keys of ΔCon/ΔHum/RGI: ``subset`` (``d_con_subset``...; what the paper's tables print)
    or ``class`` (``d_con``...; equations 8-9 as written), see :mod:`reliable_lalm.core.metrics`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    suffix = "_subset" if convention == "subset" else ""
    return [("d_con" + suffix, "d_con"), ("d_hum" + suffix, "d_hum"), ("rgi" + suffix, "rgi")]


def _with_total(modalities: Sequence[str] | None, rows: Mapping[Any, Mapping[str, Any]]) -> list[str]:
    return [*modalities, TOTAL] if modalities is not None else _groups_of(rows)


# ------------------------------------------------------------------------------------------------
# Tables 1, 2, 3: score dicts by row
# ------------------------------------------------------------------------------------------------

def table1(rows: Mapping[str, Mapping[str, Any]], *, modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1: Method x (each modality and Total) x (Acc%, Tru%, Rel%).

    ``rows`` maps the method label to its score dict; ``modalities`` (default: those the scores
    hold) fixes the column groups, Total always last. A modality a row lacks prints "n/a".
    """
    return _wide(rows, _ACC_TRU_REL, _with_total(modalities, rows), None, METHOD_INDEX)


def table2(rows: Mapping[str, Mapping[str, Any]], convention: str = "subset", *,
           modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2: Method x (each modality and Total) x (ΔCon%, ΔHum%, RGI) in ``convention``
    (``"subset"``: divided by the subset size N, what the paper prints; ``"class"``: eqs. 8-9)."""
    return _wide(rows, _gain_metrics(convention), _with_total(modalities, rows), None, METHOD_INDEX)


def table3(rows: Mapping[tuple[str, str], Mapping[str, Any]], *,
           modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 3: (Models, IDK Prompting "no"/"yes") x Table 1's columns
    (rows as :func:`reliable_lalm.experiments.table3_scores` returns them). A row whose score dict
    is ``{"not_run": reason}`` (a model that could not be run) prints "not run" with its reason."""
    df = _wide(rows, _ACC_TRU_REL, _with_total(modalities, rows), None, TABLE3_INDEX)
    notes = {label: rows[key][NOT_RUN_KEY] for key, label in zip(rows, df.index) if rows[key].get(NOT_RUN_KEY)}
    if notes:
        df.attrs[ROW_NOTES_ATTR] = notes
    return df


# ------------------------------------------------------------------------------------------------
# Tables 10, 11, 12 and Figures 3, 4: the cross-modal cells (one line per train and test modality)
# ------------------------------------------------------------------------------------------------

def _cell_modalities(cells: pd.DataFrame, modalities: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(training modalities, test modalities) in table order: ``modalities`` when given, else the
    order the cells list them (the benchmark's). Pooled tests ("sound+music") are left out."""
    if cells.empty:
        raise ValueError("no cross-modal cell to lay out")
    missing = [c for c in ("train", "test") if c not in cells.columns]
    if missing:
        raise ValueError(f"cross-modal cells lack columns {missing}; they have {list(cells.columns)}")
    tests = [t for t in dict.fromkeys(cells["test"]) if "+" not in str(t)]
    trains = list(dict.fromkeys(cells["train"]))
    if modalities is not None:
        order = list(modalities)
        tests = [m for m in order if m in tests]
        trains = [m for m in order if m in trains] + [t for t in trains if t not in order]
    else:
        trains = [m for m in tests if m in trains] + [t for t in trains if t not in tests]
    return trains, tests


def _cell_rows(cells: pd.DataFrame, trains: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Score-dict rows of the training modalities (``by_task[test]`` from each cell's columns)."""
    rows: dict[str, dict[str, Any]] = {t: {"by_task": {}} for t in trains}
    for rec in cells.to_dict("records"):
        if rec["train"] in rows:
            rows[rec["train"]]["by_task"][rec["test"]] = {k: rec.get(k) for k in keys}
    return rows


def _diagonal(trains: Sequence[str]) -> dict[str, list[str]]:
    return {t: [t] for t in trains}


def table10(cells: pd.DataFrame, *, modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 10: Acc% / Tru% / Rel% of the model fine-tuned on each training modality (rows),
    per test modality (column groups); train = test prints "-" as in the paper (that cell is
    in-domain on the paper's setting; Table 12 shows its rejection rate)."""
    trains, tests = _cell_modalities(cells, modalities)
    rows = _cell_rows(cells, trains, ("acc", "tru", "rel"))
    return _wide(rows, _ACC_TRU_REL, tests, _diagonal(trains), TRAINING_INDEX, [modality_label(t) for t in trains])


def table11(cells: pd.DataFrame, *, modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 11: ΔCon% / ΔHum% / RGI, laid out as Table 10, in the convention the cells were
    scored in (``CrossModalConfig.convention``; the paper prints the subset one)."""
    trains, tests = _cell_modalities(cells, modalities)
    rows = _cell_rows(cells, trains, ("d_con", "d_hum", "rgi"))
    return _wide(rows, [("d_con", "d_con"), ("d_hum", "d_hum"), ("rgi", "rgi")], tests, _diagonal(trains),
                 TRAINING_INDEX, [modality_label(t) for t in trains])


def table12(cells: pd.DataFrame, *, modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 12: per training modality, the IDK share of its training set and the rejection rate
    on every test modality, train = test included: ("Rejection Rate (%)", "IDK Dataset" / modality)."""
    trains, tests = _cell_modalities(cells, modalities)
    rows = _cell_rows(cells, trains, ("rej",))
    idk = {t: _number(cells.loc[cells["train"] == t, "train_idk_fraction"].iloc[0])
           if "train_idk_fraction" in cells.columns else math.nan for t in trains}
    return _rejection_layout(rows, idk, tests, [modality_label(t) for t in trains])


def _rejection_layout(rows: Mapping[str, Mapping[str, Any]], idk_fraction: Mapping[str, float],
                      tests: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    cols = [(REJECTION_HEADER, IDK_DATASET_LABEL)] + [(REJECTION_HEADER, modality_label(g)) for g in tests]
    data = [[100.0 * _number(idk_fraction.get(key))] + [_metric(score_group(rows[key], g), "rej", "rej") for g in tests]
            for key in rows]
    df = pd.DataFrame(data, index=_index(list(labels), TRAINING_INDEX),
                      columns=pd.MultiIndex.from_tuples(cols, names=["Metric", "Modality"]), dtype=float)
    df.attrs[NOT_APPLICABLE_ATTR] = []
    return df


def figure3(cells: pd.DataFrame, *, modalities: Sequence[str] | None = None,
            title: str = "RGI, cross-modal LoRA SFT") -> PaperFigure:
    """Figure 3: heatmap of the RGI of the model trained on one modality (rows) tested on another
    (columns); train = test is blank, as in Tables 10-11. ``data``: that matrix."""
    trains, tests = _cell_modalities(cells, modalities)
    rows = _cell_rows(cells, trains, ("rgi",))
    data = pd.DataFrame([[math.nan if g == t else _metric(score_group(rows[t], g), "rgi", "rgi") for g in tests]
                         for t in trains],
                        index=pd.Index([modality_label(t) for t in trains], name=TRAINING_INDEX),
                        columns=pd.Index([modality_label(g) for g in tests], name=TEST_INDEX), dtype=float)
    return PaperFigure(plot_rgi_heatmap(data, title=title), data)


_ALPHA_METRICS = (("rej", 100.0), ("rel", 100.0), ("rgi", 1.0))


def figure4(sweep: pd.DataFrame) -> PaperFigure:
    """Figure 4 (a-c): rejection rate, reliability (%) and RGI against the LoRA alpha, one line per
    test modality (pooled ones included), with bootstrap bounds where the sweep has them.
    ``data``: indexed by (alpha, modality), columns rej, rej_low, rej_high, rel..., rgi...."""
    missing = [c for c in ("alpha", "test", "rej", "rel", "rgi") if c not in sweep.columns]
    if missing:
        raise ValueError(f"figure4: the sweep lacks columns {missing}; it has {list(sweep.columns)}")
    data = sweep.rename(columns={"test": "modality"})[["alpha", "modality"]].copy()
    for name, scale in _ALPHA_METRICS:
        for column in (name, f"{name}_low", f"{name}_high"):
            if column in sweep.columns:
                data[column] = sweep[column].astype(float) * scale
    data = data.set_index(["alpha", "modality"])
    return PaperFigure(plot_alpha_ablation(data.reset_index()), data)


def paper_figure5_points(directory: str | Path | None = None) -> dict[int, float]:
    """The Figure 5 values the paper's text quotes (K -> IDK %: 1@5 = 50.2, 5@5 = 63.5)."""
    df = load_reference("figure5", directory)
    return {int(k): float(v) for k, v in zip(df["k"], df["idk_percent"])}


def figure5(fractions: pd.DataFrame, *, with_paper: bool = False) -> PaperFigure:
    """Figure 5: IDK share (%) of the K@N training set for K = 1..N, pooled over the modalities
    (column ``all`` of :meth:`Experiment.idk_fractions`, index ``k``); ``with_paper`` adds the
    values the paper quotes (only meaningful on MMAU). ``data``: ``fractions`` as given."""
    if "all" not in fractions.columns:
        raise ValueError(f"figure5: need the pooled column 'all'; got {list(fractions.columns)}")
    bars = pd.DataFrame({"k": [int(k) for k in fractions.index], "idk_percent": fractions["all"].astype(float).to_numpy()})
    n = int(fractions.attrs.get("n", max(bars["k"]) if len(bars) else 5))
    figure = plot_idk_threshold(bars, reference=paper_figure5_points() if with_paper else None, n=n)
    return PaperFigure(figure, fractions)


# ------------------------------------------------------------------------------------------------
# The paper's numbers in the same layouts
# ------------------------------------------------------------------------------------------------

def _from_long(df: pd.DataFrame, *, row: str | Sequence[str], metrics: Sequence[str], modality: str,
               groups: Sequence[str] | None, index_name: str | Sequence[str], diagonal: bool = False) -> pd.DataFrame:
    """A long reference table (one line per row and modality) in the layout of our builders;
    a modality the paper has no line for prints "-" (with ``diagonal``, rows are modalities)."""
    row_cols = [row] if isinstance(row, str) else list(row)
    for col in [*row_cols, modality, *metrics]:
        if col not in df.columns:
            raise ValueError(f"column {col!r} missing; the table has {list(df.columns)}")
    present = [str(m).strip().lower() for m in df[modality]]
    groups = list(groups) if groups is not None else [*dict.fromkeys(p for p in present if p != TOTAL), TOTAL]
    keys: list[Any] = list(dict.fromkeys(rec[0] if len(rec) == 1 else tuple(rec)
                                         for rec in df[row_cols].itertuples(index=False, name=None)))
    rows: dict[Any, dict[str, Any]] = {k: {"by_task": {}} for k in keys}
    for rec, mod in zip(df.to_dict("records"), present):
        key = rec[row_cols[0]] if len(row_cols) == 1 else tuple(rec[c] for c in row_cols)
        # Already in paper units: divide percentages so the layout's scaling restores them.
        group = {m: (_number(rec[m]) / 100.0 if m in PERCENT_METRICS else _number(rec[m])) for m in metrics}
        if mod == TOTAL:
            rows[key].update(group)
        else:
            rows[key]["by_task"][mod] = group
    skip = {k: [g for g in groups if not (g in rows[k]["by_task"] or (g == TOTAL and metrics[0] in rows[k]))]
            for k in keys}
    labels = [modality_label(str(k).strip().lower()) for k in keys] if diagonal else keys
    return _wide(rows, [(m, m) for m in metrics], groups, skip, index_name, labels)


def paper_table(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """The paper's Table 1, 2, 3, 10, 11 or 12 (``tables/reference/<name>.csv``, read by
    :func:`reliable_lalm.reporting.reference.load_reference`) in the layout of the builder of the
    same name, to pass as ``reference=`` to :func:`reliable_lalm.reporting.save_table`."""
    df = load_reference(name, directory)
    if name == "table1":
        return _from_long(df, row="method", metrics=("acc", "tru", "rel"), modality="modality", groups=None,
                          index_name=METHOD_INDEX)
    if name == "table2":
        return _from_long(df, row="method", metrics=("d_con", "d_hum", "rgi"), modality="modality", groups=None,
                          index_name=METHOD_INDEX)
    if name == "table3":
        return _from_long(df, row=("model", "idk_prompting"), metrics=("acc", "tru", "rel"), modality="modality",
                          groups=None, index_name=TABLE3_INDEX)
    if name in ("table10", "table11"):
        metrics = ("acc", "tru", "rel") if name == "table10" else ("d_con", "d_hum", "rgi")
        return _from_long(df, row="train_modality", metrics=metrics, modality="test_modality",
                          groups=PAPER_MODALITIES, index_name=TRAINING_INDEX, diagonal=True)
    if name == "table12":
        trains = list(dict.fromkeys(str(t).strip().lower() for t in df["train_modality"]))
        rows: dict[str, dict[str, Any]] = {t: {"by_task": {}} for t in trains}
        idk: dict[str, float] = {}
        for rec in df.to_dict("records"):
            train = str(rec["train_modality"]).strip().lower()
            idk[train] = _number(rec["idk_dataset"]) / 100.0
            rows[train]["by_task"][str(rec["test_modality"]).strip().lower()] = {"rej": _number(rec["rej"]) / 100.0}
        return _rejection_layout(rows, idk, PAPER_MODALITIES, [modality_label(t) for t in trains])
    raise KeyError(f"no paper layout for {name!r}; known: table1, table2, table3, table10, table11, table12 "
                   "(Figure 5's quoted points: paper_figure5_points)")
