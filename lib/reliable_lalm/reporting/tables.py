"""Writers and drawers of the paper's tables and figures (the builders are :mod:`.artifacts`).

Units: every DataFrame given here holds the numbers *as the paper prints them*: rates and
ΔCon/ΔHum in percent, RGI as a plain number. :func:`save_table` prints them with two decimals
(rounded half up, like the paper), missing values (None/NaN, e.g. an undefined RGI) as ``n/a``
and cells the layout leaves empty on purpose (train = test modality in Tables 10/11) as ``-``.

Writers: :func:`save_table` (CSV, Markdown, LaTeX, and ``<name>_vs_paper`` side by side, see
:func:`compare_with_reference`), :func:`read_table`, and :func:`save_figure` (PNG and PDF with no
embedded dates, rerunning gives identical bytes; and the plotted numbers as CSV). Drawers: :func:`plot_rgi_heatmap` (Figure 3),
:func:`plot_alpha_ablation` (Figure 4), :func:`plot_idk_threshold` (Figure 5), which the figure
builders of :mod:`.artifacts` call with the numbers they lay out.
"""
from __future__ import annotations

import math
import numbers
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reliable_lalm import paths

# The paper's labels of its modality groups (other groups are title-cased, see modality_label).
MODALITY_LABELS: dict[str, str] = {"sound": "Sound", "music": "Music", "speech": "Speech", "total": "Total"}
NA_TEXT = "n/a"        # undefined (None/NaN)
NOT_APPLICABLE = "-"   # a cell the layout leaves empty on purpose
# df.attrs key: list of (row, column) cells that print as "-" instead of "n/a".
NOT_APPLICABLE_ATTR = "not_applicable"
NOT_RUN = "not run"    # the cells of a row whose model could not be run (e.g. a worker not configured)
# df.attrs key: {row label: why it was not run}; its empty cells print NOT_RUN, the reason under the table.
ROW_NOTES_ATTR = "row_notes"
FIGURE_DPI = 200
CSV_DECIMALS = 4  # every CSV (tables and figure data) keeps two more decimals than the printed tables, rounded the same way


# ------------------------------------------------------------------------------------------------
# Numbers and labels shared with the builders (reporting.artifacts)
# ------------------------------------------------------------------------------------------------

def _number(value: Any) -> float:
    """A cell as a float; None, booleans and text that is no number are NaN (printed "n/a")."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _norm(label: Any) -> tuple[str, ...]:
    """Case- and space-insensitive key of a row or column label (tuples level by level)."""
    parts = label if isinstance(label, tuple) else (label,)
    return tuple(str(p).strip().casefold() for p in parts)


def modality_label(group: str) -> str:
    """Label of a modality group: the paper's for its three and the total, else the name title-cased."""
    return MODALITY_LABELS.get(group) or str(group).replace("-", " ").replace("_", " ").title()


# ------------------------------------------------------------------------------------------------
# Formatting and writers
# ------------------------------------------------------------------------------------------------

# Significant digits a printed cell's float is trusted to. The cells are ratios of counts (and means
# of such ratios) computed in binary floating point, which carries an error of about 1e-15 relative:
# 63.875 (= (63.75 + 64.00) / 2 %) arrives as 63.87499999999999, and half-up of that float's repr
# prints 63.87 where the decimal value 63.875 prints 63.88. Snapping to 12 significant digits first
# removes that error; a ratio of counts that is within 1e-10 of a half without being one would need a
# denominator beyond anything a benchmark of fewer than 10^5 items produces.
TRUSTED_DIGITS = 12


def printed_decimal(value: float) -> Decimal:
    """The decimal a float stands for: its repr, snapped to :data:`TRUSTED_DIGITS` significant digits."""
    exact = Decimal(repr(float(value)))
    if exact.is_zero() or not exact.is_finite():
        return exact
    return exact.quantize(Decimal(1).scaleb(exact.adjusted() - TRUSTED_DIGITS + 1), rounding=ROUND_HALF_EVEN)


def format_number(value: Any, decimals: int = 2) -> str:
    """Half-up rounding of the decimal the value stands for (0.355 -> "0.36"; 63.87499999999999, the float
    of 63.875, -> "63.88": :func:`printed_decimal`), "n/a" for None/NaN, no "-0.00"."""
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
        text = str(printed_decimal(value).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
        return text[1:] if text.startswith("-") and not any(c not in "0." for c in text[1:]) else text
    if value is pd.NA or value is pd.NaT:
        return NA_TEXT
    return str(value)


def _not_applicable(df: pd.DataFrame) -> set[tuple[Any, Any]]:
    return {(r, tuple(c) if isinstance(c, list) else c) for r, c in df.attrs.get(NOT_APPLICABLE_ATTR, [])}


def _cells(df: pd.DataFrame, decimals: int) -> list[list[str]]:
    blank = _not_applicable(df)
    not_run = df.attrs.get(ROW_NOTES_ATTR) or {}
    out = []
    for label, row in zip(df.index, df.itertuples(index=False, name=None)):
        cells = []
        for col, value in zip(df.columns, row):
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            if missing and label in not_run:
                cells.append(NOT_RUN)
            else:
                cells.append(NOT_APPLICABLE if missing and (label, col) in blank else format_number(value, decimals))
        out.append(cells)
    return out


def _row_notes(df: pd.DataFrame) -> list[str]:
    """One line per row that was not run: its label and why."""
    return [f"{' / '.join(map(str, label)) if isinstance(label, tuple) else label}: {NOT_RUN}: {reason}"
            for label, reason in (df.attrs.get(ROW_NOTES_ATTR) or {}).items()]


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
    notes = _row_notes(df)
    if notes:
        lines += ["", *notes]
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
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"\\par\\footnotesize {tex_escape(note)}" for note in _row_notes(df)]
    lines.append("\\end{table}")
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
    return df.to_csv(float_format=lambda v: format_number(v, CSV_DECIMALS), lineterminator="\n")


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


def save_table(df: pd.DataFrame, name: str, output_tag: str, *, caption: str,
               reference: pd.DataFrame | None = None, decimals: int = 2,
               out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``tables/<output_tag>/<name>.csv``, ``.md`` and ``.tex``; with ``reference`` (the paper's
    numbers in the same layout, e.g. :func:`paper_table`) also ``<name>_vs_paper.csv`` and ``.md``.

    ``output_tag``: the output folder of the run, a notebook's ``output.tag`` (the profile's name only for
    the profile's own parameters, see :mod:`reliable_lalm.runner.outputs`), never the bare profile.
    Returns ``{"csv", "md", "tex"[, "vs_paper_csv", "vs_paper_md"]} -> path``. ``df`` holds paper
    units (see the module docstring); printing rounds to ``decimals``.
    """
    directory = Path(out_dir) if out_dir is not None else paths.tables_dir(output_tag)
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
            side, caption=f"{caption} Ours (profile {output_tag}) against the paper; diff = ours - paper.",
            decimals=decimals) + "\n" + "".join(f"{n}\n\n" for n in notes).rstrip("\n") + "\n")
    return written


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def save_figure(fig: Any, name: str, output_tag: str, *, data: pd.DataFrame, dpi: int = FIGURE_DPI,
                out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``figures/<output_tag>/<name>.png``, ``.pdf`` and ``.csv`` (``data``: the numbers plotted).

    Every figure carries its data: image bytes are not portable across CPUs (a coordinate may move
    in the sixth digit), so ``rlalm reproduce --check`` compares a figure by its data CSV at the
    printed precision. ``output_tag`` as in :func:`save_table` (a notebook's ``output.tag``).
    No creation date (PDF) and no software tag (PNG) are embedded, and the dpi is fixed, so the
    same figure saved twice (or by a rerun) gives identical files.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"save_figure({name!r}): data must be the DataFrame of the plotted numbers, "
                        f"not {type(data).__name__}")
    directory = Path(out_dir) if out_dir is not None else paths.figures_dir(output_tag)
    directory.mkdir(parents=True, exist_ok=True)
    png, pdf = directory / f"{name}.png", directory / f"{name}.pdf"
    fig.savefig(png, format="png", dpi=dpi, metadata={"Software": None})
    fig.savefig(pdf, format="pdf", dpi=dpi, metadata={"CreationDate": None, "ModDate": None})
    return {"png": png, "pdf": pdf, "csv": _write(directory / f"{name}.csv", _csv(data))}


def plot_rgi_heatmap(df_train_by_test: pd.DataFrame, *, ax: Any = None, title: str | None = None,
                     cmap: str = "RdBu", limit: float | None = None, decimals: int = 2) -> Any:
    """Figure 3: RGI of models trained on one modality (rows) and tested on another (columns).

    NaN cells (the diagonal) are left white and marked "-"; the colour scale is symmetric around 0
    (blue: RGI > 0, the model rejects more of what it got wrong than of what it got right).
    """
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
    test modality (long format, as :func:`.artifacts.figure4` lays it out); ``<metric>_low/_high`` columns give
    error bars. ``logx="auto"`` uses a log2 axis when the alphas span a factor of 8 or more."""
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
                        label=modality_label(mod) if "+" not in str(mod) else str(mod), color=f"C{i}")
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


def plot_idk_threshold(df: pd.DataFrame, *, reference: Mapping[int, float] | pd.DataFrame | None = None,
                       n: int = 5, ax: Any = None, decimals: int = 1) -> Any:
    """Figure 5: IDK percentage of the training set for the K@N threshold, K = 1..N (bars).

    ``df`` has columns ``k`` and ``idk_percent`` (or ``idk_fraction`` in [0, 1]); ``reference``
    (e.g. the paper's 1@5 = 50.2 and 5@5 = 63.5, :func:`.artifacts.paper_figure5_points`) is drawn
    as points.
    """
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
