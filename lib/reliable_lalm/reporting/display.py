"""Tables as a reader of the notebooks sees them: in the paper's units and decimals.

The saved tables (:mod:`.tables`: CSV, Markdown, LaTeX) keep full precision in the CSV; on screen,
:func:`styled` prints every number with 2 decimals (half-up, no ``-0.00``: the same rounding as the
Markdown tables), :func:`interval_table` turns the bootstrap intervals of score dicts into one
cell ``x [lo, hi]`` per metric in %, and :func:`transition_table` lays the baseline -> method
transition counts out as the paper's 3 x 3 matrix.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import pandas as pd

from reliable_lalm.core.metrics import OUTCOMES
from reliable_lalm.reporting.tables import format_number

DECIMALS = 2
# How a metric key of a score dict is printed: its label, and whether it is a fraction shown in %.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "acc": ("Acc %", True), "tru": ("Tru %", True), "rej": ("Rej %", True), "rel": ("Rel %", True),
    "d_con": ("ΔCon % (class)", True), "d_hum": ("ΔHum % (class)", True), "rgi": ("RGI (class)", False),
    "d_con_subset": ("ΔCon %", True), "d_hum_subset": ("ΔHum %", True), "rgi_subset": ("RGI", False),
}




def styled(frame: pd.DataFrame, decimals: int = DECIMALS, *, percent: Sequence[str] = ()):
    """``frame`` for display: numbers with ``decimals`` decimals (integers as they are, "n/a" for
    missing); the columns named in ``percent`` hold fractions and are shown in % (``acc`` 0.8125 ->
    81.25). The frame itself is unchanged; the HTML ids derive from its content, so a re-run
    renders the same bytes."""
    shown = frame.copy()
    for column in percent:
        if column in shown.columns:
            shown[column] = pd.to_numeric(shown[column], errors="coerce") * 100
    shown = shown.rename(columns={c: f"{c} %" for c in percent if c in shown.columns})
    uuid = hashlib.sha256(shown.to_csv().encode("utf-8")).hexdigest()[:8]
    return shown.style.set_uuid(uuid).format(lambda v: format_number(v, decimals) if not isinstance(v, str) else v)


def _cell(value: Any, low: Any, high: Any, percent: bool) -> str:
    scale = 100.0 if percent else 1.0

    def text(v: Any) -> str:
        return format_number(None if v is None else scale * v, DECIMALS)

    if low is None or high is None:
        return text(value)
    return f"{text(value)} [{text(low)}, {text(high)}]"


def interval_table(rows: Mapping[Any, Mapping[str, Any]], metrics: Sequence[str] = ("acc", "tru", "rej", "rel")
                   ) -> pd.DataFrame:
    """One row per (method, modality), one column per metric, cells ``x [lo, hi]`` (95 % bootstrap
    interval; % for the rates, plain for RGI) from score dicts with ``ci``."""
    records = []
    for label, score in rows.items():
        for group_name, group in [*score.get("by_task", {}).items(), ("total", score)]:
            ci = group.get("ci", {})
            record: dict[str, Any] = {"method": label, "modality": group_name}
            for metric in metrics:
                name, percent = METRIC_LABELS.get(metric, (metric, False))
                interval = ci.get(metric) or {}
                record[name] = _cell(group.get(metric), interval.get("low"), interval.get("high"), percent)
            records.append(record)
    return pd.DataFrame.from_records(records).set_index(["method", "modality"])


def transition_table(score: Mapping[str, Any]) -> pd.DataFrame:
    """Counts of items by the baseline's outcome (rows) and the method's (columns)."""
    code = {"correct": "c", "rejected": "r", "wrong": "w"}
    return pd.DataFrame([[int(score[f"n{code[b]}{code[m]}"]) for m in OUTCOMES] for b in OUTCOMES],
                        index=pd.Index([f"baseline {b}" for b in OUTCOMES], name="items"),
                        columns=[f"method {m}" for m in OUTCOMES])
