"""Tables and figures of the paper from score dicts (what ``rlalm score`` returns).

Units: score dicts hold fractions in [0, 1]; every DataFrame built here holds the numbers *as the
paper prints them*: rates and ΔCon/ΔHum in percent, RGI as a plain number. :func:`save_table`
prints them with two decimals (rounded half up, like the paper), missing values (None/NaN, e.g.
an undefined RGI) as ``n/a`` and cells that do not apply (train = test modality in Tables 10/11)
as ``-``.

Table builders (paper layouts, columns ``(modality, metric)``):

* :func:`metrics_table` - Tables 1, 3, 10: Acc% / Tru% / Rel% per modality and total.
* :func:`gain_table` - Tables 2, 11: ΔCon% / ΔHum% / RGI.
* :func:`rejection_table` - Table 12: IDK share of the training set and rejection rate per test modality.
* :func:`rgi_matrix` / :func:`alpha_frame` - the data of Figures 3 and 4.
* :func:`paper_table` - the paper's numbers (``tables/reference/*.csv``) in the same layouts,
  to pass as ``reference=`` to :func:`save_table`.

Writers: :func:`save_table` (CSV, Markdown, LaTeX, and ``<name>_vs_paper`` side by side) and
:func:`save_figure` (PNG and PDF with no embedded dates: rerunning gives identical bytes).
"""
from __future__ import annotations

import math
import numbers
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from reliable_lalm import paths

MODALITIES: tuple[str, ...] = ("sound", "music", "speech")
GROUPS: tuple[str, ...] = MODALITIES + ("total",)
MODALITY_LABELS: dict[str, str] = {"sound": "Sound", "music": "Music", "speech": "Speech", "total": "Total"}
METRIC_LABELS: dict[str, str] = {"acc": "Acc%", "tru": "Tru%", "rel": "Rel%", "rej": "Rej%",
                                 "d_con": "ΔCon%", "d_hum": "ΔHum%", "rgi": "RGI"}
PERCENT_METRICS = frozenset({"acc", "tru", "rel", "rej", "d_con", "d_hum"})
CONVENTIONS = ("subset", "class")
REJECTION_HEADER = "Rejection Rate (%)"
IDK_DATASET_LABEL = "IDK Dataset"
# Figure 5 numbers quoted in section 5.4 of the paper (K@5: 1@5 and 5@5).
PAPER_FIGURE5: dict[int, float] = {1: 50.2, 5: 63.5}
NA_TEXT = "n/a"        # undefined (None/NaN)
NOT_APPLICABLE = "-"   # a cell the layout leaves empty on purpose
# df.attrs key: list of (row, column) cells that print as "-" instead of "n/a".
NOT_APPLICABLE_ATTR = "not_applicable"
FIGURE_DPI = 200


# ------------------------------------------------------------------------------------------------
# Score dicts -> numbers
# ------------------------------------------------------------------------------------------------

def score_group(score: Mapping[str, Any], group: str) -> Mapping[str, Any] | None:
    """The numbers of one modality (``score["by_task"][group]``) or of the total (the top level).

    Also accepts :func:`reliable_lalm.core.metrics.summarize` output (``{"total": ..., "by_task": ...}``).
    """
    if group == "total":
        total = score.get("total")
        return total if isinstance(total, Mapping) and "acc" not in score else score
    by_task = score.get("by_task") or {}
    return by_task.get(group)


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _metric(group: Mapping[str, Any] | None, key: str, metric: str) -> float:
    """Paper units: percent for rates and deltas (``metric`` names the kind), RGI as is."""
    if not group:
        return math.nan
    value = _number(group.get(key))
    return 100.0 * value if metric in PERCENT_METRICS else value


def _ci(group: Mapping[str, Any] | None, key: str, metric: str) -> tuple[float, float]:
    ci = ((group or {}).get("ci") or {}).get(key) or {}
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    return scale * _number(ci.get("low")), scale * _number(ci.get("high"))


def _row_label(key: Any) -> Any:
    return MODALITY_LABELS.get(key, key) if isinstance(key, str) else key


def _norm(label: Any) -> tuple[str, ...]:
    """Case- and space-insensitive key of a row or column label (tuples level by level)."""
    parts = label if isinstance(label, tuple) else (label,)
    return tuple(str(p).strip().casefold() for p in parts)


def _skipped(skip: Any, row: Any, group: str) -> bool:
    if skip is None:
        return False
    if skip == "diagonal":
        return _norm(row) == (group,) or _norm(row) == _norm(MODALITY_LABELS.get(group, group))
    if isinstance(skip, Mapping):
        cells = skip.get(row, ())
        return group in cells or MODALITY_LABELS.get(group) in cells
    raise ValueError(f"skip must be None, 'diagonal' or a mapping row -> modalities, got {skip!r}")


def _index(keys: Sequence[Any], index_name: str | Sequence[str] | None) -> pd.Index:
    labels = [_row_label(k) for k in keys]
    if labels and all(isinstance(k, tuple) for k in labels):
        names = list(index_name) if isinstance(index_name, (list, tuple)) else None
        return pd.MultiIndex.from_tuples(labels, names=names)
    return pd.Index(labels, name=index_name if isinstance(index_name, str) else None, dtype=object)


def modality_label(group: str) -> str:
    """Column label of a modality group: the paper's for its three, else the group's name in title case."""
    return MODALITY_LABELS.get(group) or str(group).replace("-", " ").replace("_", " ").title()


def _wide(rows: Mapping[Any, Mapping[str, Any]], metrics: Sequence[tuple[str, str]], groups: Sequence[str],
          skip: Any, index_name: str | Sequence[str] | None) -> pd.DataFrame:
    """rows x (group label, metric label); ``metrics`` = (score key, metric kind)."""
    # Any benchmark's modality groups (MMAR has seven); the paper's three keep their printed labels.
    columns = pd.MultiIndex.from_tuples([(modality_label(g), METRIC_LABELS[m]) for g in groups for _, m in metrics],
                                        names=["Modality", "Metric"])
    data, not_applicable = [], []
    index = _index(list(rows), index_name)
    for key, label in zip(rows, index):
        score = rows[key]
        values = []
        for g in groups:
            skipped = _skipped(skip, key, g) or _skipped(skip, label, g)
            group = None if skipped else score_group(score, g)
            for score_key, metric in metrics:
                values.append(math.nan if skipped else _metric(group, score_key, metric))
                if skipped:
                    not_applicable.append((label, (MODALITY_LABELS[g], METRIC_LABELS[metric])))
        data.append(values)
    df = pd.DataFrame(data, index=index, columns=columns, dtype=float)
    df.attrs[NOT_APPLICABLE_ATTR] = not_applicable
    return df


def metrics_table(rows: Mapping[Any, Mapping[str, Any]], *, modalities: Sequence[str] = GROUPS,
                  skip: Any = None, index_name: str | Sequence[str] | None = "Method") -> pd.DataFrame:
    """Tables 1/3/10: rows x (Sound/Music/Speech/Total) x (Acc%, Tru%, Rel%), in percent.

    ``rows`` maps a row label (tuple labels give a MultiIndex, e.g. Table 3's (model, IDK prompting))
    to a score dict. ``skip="diagonal"`` (Table 10) or ``{row: [modality, ...]}`` leaves cells
    empty ("-"); a modality missing from ``by_task`` prints "n/a".
    """
    return _wide(rows, [("acc", "acc"), ("tru", "tru"), ("rel", "rel")], modalities, skip, index_name)


def gain_table(rows: Mapping[Any, Mapping[str, Any]], convention: str = "subset", *,
               modalities: Sequence[str] = GROUPS, skip: Any = None,
               index_name: str | Sequence[str] | None = "Method") -> pd.DataFrame:
    """Tables 2/11: rows x modality x (ΔCon%, ΔHum%, RGI).

    ``convention="subset"`` (``d_con_subset``...; what the paper's tables print) or ``"class"``
    (``d_con``...; equations 8-9 as written), see :mod:`reliable_lalm.core.metrics`.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    suffix = "_subset" if convention == "subset" else ""
    return _wide(rows, [("d_con" + suffix, "d_con"), ("d_hum" + suffix, "d_hum"), ("rgi" + suffix, "rgi")],
                 modalities, skip, index_name)


def rejection_table(rows: Mapping[Any, Mapping[str, Any]], idk_dataset: Mapping[Any, float] | None = None, *,
                    modalities: Sequence[str] = MODALITIES, skip: Any = None,
                    index_name: str | Sequence[str] | None = "Training Modality") -> pd.DataFrame:
    """Table 12: training modality x ("Rejection Rate (%)", IDK Dataset / Sound / Music / Speech).

    ``rows`` maps the training modality to the score dict of its model; ``idk_dataset`` maps it
    to the IDK fraction (in [0, 1]) of its training set (column left out when not given).
    """
    cols: list[tuple[str, str]] = []
    if idk_dataset is not None:
        cols.append((REJECTION_HEADER, IDK_DATASET_LABEL))
    cols += [(REJECTION_HEADER, MODALITY_LABELS[g]) for g in modalities]
    index = _index(list(rows), index_name)
    data, not_applicable = [], []
    for key, label in zip(rows, index):
        values = []
        if idk_dataset is not None:
            values.append(100.0 * _number(idk_dataset.get(key, idk_dataset.get(label))))
        for g in modalities:
            if _skipped(skip, key, g) or _skipped(skip, label, g):
                values.append(math.nan)
                not_applicable.append((label, (REJECTION_HEADER, MODALITY_LABELS[g])))
            else:
                values.append(_metric(score_group(rows[key], g), "rej", "rej"))
        data.append(values)
    df = pd.DataFrame(data, index=index, columns=pd.MultiIndex.from_tuples(cols, names=["Metric", "Modality"]),
                      dtype=float)
    df.attrs[NOT_APPLICABLE_ATTR] = not_applicable
    return df


def rgi_matrix(rows: Mapping[str, Mapping[str, Any]], convention: str = "subset", *,
               modalities: Sequence[str] = MODALITIES, diagonal: bool = False) -> pd.DataFrame:
    """Figure 3 data: RGI of the model trained on ``row`` (index) tested on each modality (columns).

    The diagonal (train = test) is NaN unless ``diagonal=True``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    key = "rgi_subset" if convention == "subset" else "rgi"
    data = [[math.nan if (not diagonal and _norm(train) == (g,)) else _metric(score_group(score, g), key, "rgi")
             for g in modalities] for train, score in rows.items()]
    return pd.DataFrame(data, index=pd.Index([_row_label(k) for k in rows], name="Training modality"),
                        columns=pd.Index([MODALITY_LABELS[g] for g in modalities], name="Test modality"),
                        dtype=float)


def alpha_frame(runs: Mapping[float, Mapping[str, Any]], *, modalities: Sequence[str] = ("sound", "music"),
                convention: str = "subset") -> pd.DataFrame:
    """Figure 4 data, long format: columns alpha, modality, rej, rel (percent), rgi, plus
    ``<metric>_low/_high`` where the score dicts carry bootstrap intervals (``ci``)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    rgi_key = "rgi_subset" if convention == "subset" else "rgi"
    records = []
    for alpha, score in runs.items():
        for g in modalities:
            group = score_group(score, g)
            rec: dict[str, Any] = {"alpha": float(alpha), "modality": g}
            for name, key in (("rej", "rej"), ("rel", "rel"), ("rgi", rgi_key)):
                rec[name] = _metric(group, key, name)
                low, high = _ci(group, key, name)
                if not (math.isnan(low) and math.isnan(high)):
                    rec[f"{name}_low"], rec[f"{name}_high"] = low, high
            records.append(rec)
    return pd.DataFrame.from_records(records)


# ------------------------------------------------------------------------------------------------
# The paper's numbers in the same layouts
# ------------------------------------------------------------------------------------------------

def from_long(df: pd.DataFrame, *, row: str | Sequence[str], metrics: Sequence[str], modality: str = "modality",
              groups: Sequence[str] | None = None, index_name: str | Sequence[str] | None = None) -> pd.DataFrame:
    """A long table (one line per row and modality, e.g. ``tables/reference/table1.csv``) in the
    builders' wide layout: rows x (modality label, metric label). Missing cells are "-"."""
    row_cols = [row] if isinstance(row, str) else list(row)
    for col in [*row_cols, modality, *metrics]:
        if col not in df.columns:
            raise ValueError(f"column {col!r} missing; the table has {list(df.columns)}")
    present = [str(m).strip().lower() for m in df[modality]]
    groups = list(groups) if groups is not None else [g for g in GROUPS if g in present]
    keys: list[Any] = []
    for values in df[row_cols].itertuples(index=False, name=None):
        key = values[0] if len(values) == 1 else tuple(values)
        if key not in keys:
            keys.append(key)
    rows = {k: {"by_task": {}} for k in keys}
    for rec, mod in zip(df.to_dict("records"), present):
        key = rec[row_cols[0]] if len(row_cols) == 1 else tuple(rec[c] for c in row_cols)
        # Values are already in paper units: divide percentages so the builders' scaling restores them.
        group = {m: (_number(rec[m]) / 100.0 if m in PERCENT_METRICS else _number(rec[m])) for m in metrics}
        if mod == "total":
            rows[key].update(group)
        else:
            rows[key]["by_task"][mod] = group
    # A modality the long table has no line for is a cell the paper leaves empty ("-").
    skip = {k: [g for g in groups if not (g in rows[k]["by_task"] or (g == "total" and metrics[0] in rows[k]))]
            for k in keys}
    return _wide(rows, [(m, m) for m in metrics], groups, skip,
                 index_name if index_name is not None else (row if isinstance(row, str) else list(row)))


_PAPER_SPECS: dict[str, dict[str, Any]] = {
    "table1": dict(row="method", metrics=("acc", "tru", "rel"), index_name="Method"),
    "table2": dict(row="method", metrics=("d_con", "d_hum", "rgi"), index_name="Method"),
    "table3": dict(row=("model", "idk_prompting"), metrics=("acc", "tru", "rel"),
                   index_name=("Models", "IDK Prompting")),
    "table10": dict(row="train_modality", metrics=("acc", "tru", "rel"), modality="test_modality",
                    groups=MODALITIES, index_name="Training Modality"),
    "table11": dict(row="train_modality", metrics=("d_con", "d_hum", "rgi"), modality="test_modality",
                    groups=MODALITIES, index_name="Training Modality"),
}


def paper_table(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """The paper's Table 1, 2, 3, 10, 11 or 12 (``tables/reference/<name>.csv``) in the layout of
    :func:`metrics_table` / :func:`gain_table` / :func:`rejection_table`; ``figure5`` as k, idk_percent."""
    path = Path(directory or paths.REFERENCE_TABLES_DIR) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"reference table missing: {path}")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if name == "figure5":
        return df[["k", "idk_percent"]].copy()
    if name == "table12":
        rows: dict[str, dict[str, Any]] = {}
        idk: dict[str, float] = {}
        for rec in df.to_dict("records"):
            train = str(rec["train_modality"]).strip().lower()
            idk[train] = _number(rec["idk_dataset"]) / 100.0
            rows.setdefault(train, {"by_task": {}})["by_task"][str(rec["test_modality"]).strip().lower()] = \
                {"rej": _number(rec["rej"]) / 100.0}
        return rejection_table(rows, idk)
    if name not in _PAPER_SPECS:
        raise KeyError(f"no layout for reference {name!r}; known: {', '.join([*_PAPER_SPECS, 'table12', 'figure5'])}")
    return from_long(df, **_PAPER_SPECS[name])  # modality rows ("sound") come out labelled "Sound"


# ------------------------------------------------------------------------------------------------
# Formatting and writers
# ------------------------------------------------------------------------------------------------

def format_number(value: Any, decimals: int = 2) -> str:
    """Half-up rounding of the printed decimal (0.355 -> "0.36"), "n/a" for None/NaN, no "-0.00"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA_TEXT
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
        return text[1:] if text.startswith("-") and not any(c not in "0." for c in text[1:]) else text
    if value is pd.NA or value is pd.NaT:
        return NA_TEXT
    return str(value)


def _not_applicable(df: pd.DataFrame) -> set[tuple[Any, Any]]:
    return {(r, tuple(c) if isinstance(c, list) else c) for r, c in df.attrs.get(NOT_APPLICABLE_ATTR, [])}


def _cells(df: pd.DataFrame, decimals: int) -> list[list[str]]:
    blank = _not_applicable(df)
    out = []
    for label, row in zip(df.index, df.itertuples(index=False, name=None)):
        cells = []
        for col, value in zip(df.columns, row):
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(NOT_APPLICABLE if missing and (label, col) in blank else format_number(value, decimals))
        out.append(cells)
    return out


def _index_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    names = [str(n) if n is not None else "" for n in df.index.names]
    rows = [[str(v) for v in (label if isinstance(label, tuple) else (label,))] for label in df.index]
    return names, rows


def _col_levels(df: pd.DataFrame) -> list[tuple[str, ...]]:
    return [tuple(str(x) for x in (c if isinstance(c, tuple) else (c,))) for c in df.columns]


def to_markdown(df: pd.DataFrame, *, caption: str | None = None, decimals: int = 2) -> str:
    """A pipe table; MultiIndex column levels are joined with spaces ("Sound Acc%")."""
    names, index_rows = _index_cells(df)
    header = names + [" ".join(p for p in c if p) for c in _col_levels(df)]
    align = [":---"] * len(names) + ["---:"] * len(df.columns)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"Table: {caption}", ""] if caption else []
    lines.append("| " + " | ".join(esc(h) for h in header) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for idx, cells in zip(index_rows, _cells(df, decimals)):
        lines.append("| " + " | ".join(esc(c) for c in idx + cells) + " |")
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                "Δ": r"$\Delta$", "±": r"$\pm$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, *, caption: str | None = None, label: str | None = None, decimals: int = 2) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) with ``\\multicolumn`` headers for MultiIndex columns.

    Written here rather than with ``DataFrame.to_latex`` so the output does not depend on jinja2 or
    the pandas version, and "n/a"/"-" cells are printed the same way as in Markdown.
    """
    names, index_rows = _index_cells(df)
    levels = _col_levels(df)
    depth = max((len(c) for c in levels), default=1)
    levels = [("",) * (depth - len(c)) + c for c in levels]
    n_idx = len(names)
    lines = ["% generated by reliable_lalm.reporting; needs \\usepackage{booktabs}",
             "\\begin{table}[htbp]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{tex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines.append("\\begin{tabular}{" + "l" * n_idx + "r" * len(levels) + "}")
    lines.append("\\toprule")
    for level in range(depth - 1):
        cells, rules, j = [""] * n_idx, [], 0
        while j < len(levels):
            k = j
            # A header spans the columns that share this level and every level above it.
            while k + 1 < len(levels) and levels[k + 1][: level + 1] == levels[j][: level + 1]:
                k += 1
            text = levels[j][level]
            span = k - j + 1
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{tex_escape(text)}}}" if span > 1 else tex_escape(text))
            if text:
                rules.append(f"\\cmidrule(lr){{{n_idx + j + 1}-{n_idx + k + 1}}}")
            j = k + 1
        lines.append(" & ".join(cells) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append(" & ".join([tex_escape(n) for n in names] + [tex_escape(c[-1]) for c in levels]) + " \\\\")
    lines.append("\\midrule")
    for idx, cells in zip(index_rows, _cells(df, decimals)):
        lines.append(" & ".join([tex_escape(v) for v in idx] + [tex_escape(c) for c in cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def compare_with_reference(ours: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Ours and the paper side by side, one line per cell: index (row levels..., column levels...),
    columns ``ours``, ``paper`` and ``diff`` (ours - paper).

    Rows and columns are matched ignoring case and surrounding spaces; every column of ``ours``
    must exist in ``reference`` (ValueError otherwise). A row of ours the paper does not have
    (a model it did not evaluate) is kept with ``paper`` and ``diff`` empty. Rows only the paper has are left out
    (``attrs["paper_only_rows"]`` lists them); cells empty by design on both sides ("-", e.g. the
    diagonal of Table 10) are dropped.
    """
    ref_cols = {_norm(c): c for c in reference.columns}
    missing = [c for c in ours.columns if _norm(c) not in ref_cols]
    if missing:
        raise ValueError(f"reference lacks columns {missing}; it has {list(reference.columns)}")
    ref_rows = {_norm(r): r for r in reference.index}  # a row the paper lacks gets NaN paper values
    blank_ours, blank_ref = _not_applicable(ours), _not_applicable(reference)
    row_names = [n if n is not None else f"row{i}" for i, n in enumerate(ours.index.names)]
    col_names = _column_names(ours)
    records, labels = [], []
    for row in ours.index:
        ref_row = ref_rows.get(_norm(row))
        for col in ours.columns:
            ref_col = ref_cols[_norm(col)]
            o = _number(ours.at[row, col])
            p = _number(reference.at[ref_row, ref_col]) if ref_row is not None else math.nan
            if math.isnan(o) and math.isnan(p) and (row, col) in blank_ours \
                    and (ref_row is None or (ref_row, ref_col) in blank_ref):
                continue
            labels.append((*(row if isinstance(row, tuple) else (row,)), *(col if isinstance(col, tuple) else (col,))))
            records.append({"ours": o, "paper": p, "diff": o - p})
    out = pd.DataFrame.from_records(records, columns=["ours", "paper", "diff"],
                                    index=pd.MultiIndex.from_tuples(labels, names=[*row_names, *col_names]))
    ours_rows = {_norm(r) for r in ours.index}
    out.attrs["paper_only_rows"] = [r for k, r in ref_rows.items() if k not in ours_rows]
    return out


def _column_names(df: pd.DataFrame) -> list[str]:
    names = list(df.columns.names)
    defaults = ["Modality", "Metric"] if len(names) == 2 else [f"column{i}" for i in range(len(names))]
    return [n if n is not None else d for n, d in zip(names, defaults)]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def _csv(df: pd.DataFrame) -> str:
    # Four decimals of a percentage keep single items visible (1/333 = 0.3003 %) and make reruns diffable.
    return df.to_csv(float_format="%.4f", lineterminator="\n")


def read_table(path: str | Path, index_levels: int = 1) -> pd.DataFrame:
    """Read a CSV written by :func:`save_table` back, MultiIndex columns restored.

    ``index_levels``: how many leading columns form the index (2 for Table 3's (model, IDK
    prompting); row levels + 2 for a ``_vs_paper.csv``). For MultiIndex columns pandas writes one
    line per column level and then a line with only the index names, which gives the header depth.
    """
    raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    n_header = 1
    for i in range(1, min(len(raw), 8)):
        if (raw.iloc[i, index_levels:] == "").all() and (raw.iloc[i, :index_levels] != "").any():
            n_header = i
            break
    header: int | list[int] = list(range(n_header)) if n_header > 1 else 0
    return pd.read_csv(path, header=header, index_col=list(range(index_levels)) if index_levels > 1 else 0)


def save_table(df: pd.DataFrame, name: str, profile: str, *, caption: str,
               reference: pd.DataFrame | None = None, decimals: int = 2,
               out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``tables/<profile>/<name>.csv``, ``.md`` and ``.tex``; with ``reference`` (the paper's
    numbers in the same layout, e.g. :func:`paper_table`) also ``<name>_vs_paper.csv`` and ``.md``.

    Returns ``{"csv", "md", "tex"[, "vs_paper_csv", "vs_paper_md"]} -> path``. ``df`` holds paper
    units (see the module docstring); printing rounds to ``decimals``.
    """
    directory = Path(out_dir) if out_dir is not None else paths.tables_dir(profile)
    written = {
        "csv": _write(directory / f"{name}.csv", _csv(df)),
        "md": _write(directory / f"{name}.md", to_markdown(df, caption=caption, decimals=decimals)),
        "tex": _write(directory / f"{name}.tex", to_latex(df, caption=caption, label=f"tab:{name}",
                                                           decimals=decimals)),
    }
    if reference is not None:
        side = compare_with_reference(df, reference)
        diffs = side["diff"].abs().dropna()
        notes = [f"{len(diffs)} cells compared; mean |diff| = {format_number(diffs.mean(), decimals)}, "
                 f"max |diff| = {format_number(diffs.max(), decimals)}" if len(diffs) else "no cell compared"]
        if side.attrs.get("paper_only_rows"):
            notes.append("paper rows without ours: " + ", ".join(map(str, side.attrs["paper_only_rows"])))
        written["vs_paper_csv"] = _write(directory / f"{name}_vs_paper.csv", _csv(side))
        written["vs_paper_md"] = _write(directory / f"{name}_vs_paper.md", to_markdown(
            side, caption=f"{caption} Ours (profile {profile}) against the paper; diff = ours - paper.",
            decimals=decimals) + "\n" + "".join(f"{n}\n\n" for n in notes).rstrip("\n") + "\n")
    return written


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def save_figure(fig: Any, name: str, profile: str, *, dpi: int = FIGURE_DPI,
                out_dir: str | Path | None = None, data: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``figures/<profile>/<name>.png`` and ``.pdf`` byte-for-byte reproducibly; with
    ``data`` (the numbers plotted) also ``<name>.csv`` beside them, so a figure can be checked by
    its data and not only by its bytes (``rlalm reproduce --check``).

    No creation date (PDF) and no software tag (PNG) are embedded, and the dpi is fixed, so the
    same figure saved twice (or by a rerun) gives identical files.
    """
    directory = Path(out_dir) if out_dir is not None else paths.figures_dir(profile)
    directory.mkdir(parents=True, exist_ok=True)
    png, pdf = directory / f"{name}.png", directory / f"{name}.pdf"
    fig.savefig(png, format="png", dpi=dpi, metadata={"Software": None})
    fig.savefig(pdf, format="pdf", dpi=dpi, metadata={"CreationDate": None, "ModDate": None})
    written = {"png": png, "pdf": pdf}
    if data is not None:
        written["csv"] = _write(directory / f"{name}.csv", _csv(data))
    return written


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def plot_rgi_heatmap(df_train_by_test: pd.DataFrame, *, ax: Any = None, title: str | None = None,
                     cmap: str = "RdBu", limit: float | None = None, decimals: int = 2) -> Any:
    """Figure 3: RGI of models trained on one modality (rows) and tested on another (columns).

    NaN cells (the diagonal) are left white and marked "-"; the colour scale is symmetric around 0
    (blue: RGI > 0, the model rejects more of what it got wrong than of what it got right).
    """
    plt = _pyplot()
    values = df_train_by_test.to_numpy(dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    limit = float(limit if limit is not None else (finite.max() if finite.size and finite.max() > 0 else 1.0))
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.8))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")  # NaN cells (the diagonal) stay blank
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=-limit, vmax=limit)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in df_train_by_test.columns])
    ax.set_yticks(range(values.shape[0]), [str(r) for r in df_train_by_test.index])
    ax.set_xlabel(df_train_by_test.columns.name or "Test modality")
    ax.set_ylabel(df_train_by_test.index.name or "Training modality")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = NOT_APPLICABLE if not np.isfinite(v) else format_number(v, decimals)
            dark = np.isfinite(v) and abs(v) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, label="RGI")
    ax.set_title(title if title is not None else "RGI, cross-modal LoRA SFT")
    ax.figure.tight_layout()
    return ax.figure


_ALPHA_PANELS = (("rej", "Rejection Rate (%)"), ("rel", "Reliability (%)"), ("rgi", "RGI"))


def plot_alpha_ablation(df: pd.DataFrame, *, x: str = "alpha", modality: str = "modality",
                        panels: Sequence[tuple[str, str]] = _ALPHA_PANELS, logx: bool | str = "auto") -> Any:
    """Figure 4 (a-c): rejection rate, reliability and RGI against the LoRA alpha, one line per
    test modality (long format, e.g. :func:`alpha_frame`); ``<metric>_low/_high`` columns give
    error bars. ``logx="auto"`` uses a log2 axis when the alphas span a factor of 8 or more."""
    plt = _pyplot()
    needed = [x, modality] + [m for m, _ in panels]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"plot_alpha_ablation: columns {missing} missing; got {list(df.columns)}")
    data = df.sort_values([modality, x], kind="stable")
    xs = np.asarray(sorted(set(data[x].astype(float))))
    if logx == "auto":
        logx = bool(len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 8)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5))
    axes = np.atleast_1d(axes)
    mods = list(dict.fromkeys(df[modality]))  # legend in the caller's order, not alphabetical
    for letter, ax, (metric, label) in zip("abcdefgh", axes, panels):
        for i, mod in enumerate(mods):
            part = data[data[modality] == mod]
            xv, yv = part[x].to_numpy(float), part[metric].to_numpy(float)
            yerr = None
            if f"{metric}_low" in part and f"{metric}_high" in part:
                low, high = part[f"{metric}_low"].to_numpy(float), part[f"{metric}_high"].to_numpy(float)
                yerr = np.nan_to_num(np.vstack([yv - low, high - yv]), nan=0.0).clip(min=0.0)
            ax.errorbar(xv, yv, yerr=yerr, marker="o", capsize=3 if yerr is not None else 0,
                        label=MODALITY_LABELS.get(mod, str(mod)), color=f"C{i}")
        if metric == "rgi":
            ax.axhline(0.0, color="0.5", linestyle="--", linewidth=1)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [format_number(v, 0) if float(v).is_integer() else str(v) for v in xs])
        ax.minorticks_off()
        ax.set_xlabel("LoRA alpha")
        ax.set_ylabel(label)
        ax.set_title(f"({letter}) {label}")
        ax.grid(alpha=0.3)
    axes[0].legend(title="Test modality")
    fig.tight_layout()
    return fig


def plot_idk_threshold(df: pd.DataFrame, *, reference: Mapping[int, float] | pd.DataFrame | None = PAPER_FIGURE5,
                       n: int = 5, ax: Any = None, decimals: int = 1) -> Any:
    """Figure 5: IDK percentage of the training set for the K@N threshold, K = 1..N (bars).

    ``df`` has columns ``k`` and ``idk_percent`` (or ``idk_fraction`` in [0, 1]); ``reference``
    (default: the paper's 1@5 = 50.2 and 5@5 = 63.5) is drawn as points.
    """
    plt = _pyplot()
    if "k" not in df.columns:
        raise ValueError(f"plot_idk_threshold: column 'k' missing; got {list(df.columns)}")
    if "idk_percent" in df.columns:
        pct = df["idk_percent"].astype(float)
    elif "idk_fraction" in df.columns:
        pct = 100.0 * df["idk_fraction"].astype(float)
    else:
        raise ValueError("plot_idk_threshold: need a column 'idk_percent' or 'idk_fraction'")
    ks = df["k"].astype(int).to_numpy()
    order = np.argsort(ks, kind="stable")
    ks, pct = ks[order], pct.to_numpy()[order]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.4))
    bars = ax.bar(range(len(ks)), pct, color="C0", label="ours")
    for bar, v in zip(bars, pct):
        # Inside the bar, half-way up, so the paper's markers at the bar tops stay readable.
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() / 2, format_number(v, decimals),
                ha="center", va="center", color="white", fontsize=9)
    if reference is not None:
        ref = (dict(zip(reference["k"].astype(int), reference["idk_percent"].astype(float)))
               if isinstance(reference, pd.DataFrame) else {int(k): float(v) for k, v in reference.items()})
        pos = {int(k): i for i, k in enumerate(ks)}
        pts = [(pos[k], v) for k, v in sorted(ref.items()) if k in pos]
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], linestyle="none", marker="D", color="C3",
                    label="paper")
    ax.set_xticks(range(len(ks)), [f"{k}@{n}" for k in ks])
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"K@{n} threshold")
    ax.set_ylabel("IDK percentage (%)")
    ax.legend(loc="upper left")
    ax.figure.tight_layout()
    return ax.figure
