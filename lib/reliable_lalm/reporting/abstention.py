"""Figures of notebook 08 (confidence-based abstention): risk–coverage curves and reliability
diagrams, drawn from the maths of :mod:`reliable_lalm.core.abstention` as computed by
:class:`reliable_lalm.experiments.abstention.AbstentionStudy`."""
from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np

from reliable_lalm.core.abstention import Calibration, RiskCoverage
from reliable_lalm.reporting.tables import CSV_DECIMALS


def plot_reliability_diagram(cal: Calibration, *, ax: Any = None, title: str | None = None,
                             decimals: int | None = None) -> Any:
    """Reliability diagram: accuracy per bin (bars at the bin's mean confidence) against the
    diagonal, with the bin counts written above the bars and the ECE in the legend. Returns the figure.

    ``decimals``: draw the bars at their positions and heights rounded so (the precision of the
    figure's data CSV), so a change in a far digit (another CPU's kernels) does not move them."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    full = [b for b in cal.bins if b.count]
    width = 1.0 / max(cal.n_bins, 1)
    shown = (lambda v: v) if decimals is None else (lambda v: round(v, decimals))  # noqa: E731
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    if full:
        x = [shown(b.mean_confidence) for b in full]
        heights = [shown(b.accuracy) for b in full]
        ax.bar(x, heights, width=width * 0.9, color="tab:blue", alpha=0.8, edgecolor="black",
               label=f"accuracy (ECE {cal.ece:.3f})" if cal.ece is not None else "accuracy")
        for b, xb, hb in zip(full, x, heights):
            ax.text(xb, min(hb + 0.02, 0.97), str(b.count), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title if title is not None else f"Reliability diagram ({cal.binning}, {cal.n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_risk_coverage(curves: Mapping[str, RiskCoverage], *, ax: Any = None, title: str | None = None) -> Any:
    """Risk–coverage curves (one line per named confidence score, AURC in the legend)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.8))
    for name, rc in curves.items():
        label = f"{name} (AURC {rc.aurc:.3f})" if rc.aurc is not None else name
        ax.step(rc.coverage, rc.risk, where="post", label=label)
    ax.set_xlim(0, 1)
    ax.set_xlabel("coverage")
    ax.set_ylabel("selective risk")
    ax.set_title(title if title is not None else "Risk–coverage")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def risk_coverage_figure(curves: Mapping[str, RiskCoverage]) -> Any:
    """Risk–coverage curves of every score on the baseline's answers (AURC in the legend);
    ``curves``: :meth:`~reliable_lalm.experiments.abstention.AbstentionStudy.curves`."""
    return plot_risk_coverage(curves, title="Risk–coverage of the baseline's answers")


def reliability_figure(calibrations: Mapping[str, Calibration]) -> Any:
    """Reliability diagrams, one panel per score, drawn at the precision of the figure's data CSV;
    ``calibrations``: :meth:`~reliable_lalm.experiments.abstention.AbstentionStudy.calibrations`."""
    fig, axes = plt.subplots(1, len(calibrations), figsize=(3.2 * len(calibrations), 3.4))
    for ax, (name, cal) in zip(np.atleast_1d(axes), calibrations.items()):
        plot_reliability_diagram(cal, ax=ax, title=name, decimals=CSV_DECIMALS)
    fig.tight_layout()
    return fig
