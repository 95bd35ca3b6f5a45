"""Figures of notebook 09 (uncertainty estimators, audio reliance, risk-controlled abstention)."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def estimator_aurc_figure(table: pd.DataFrame) -> Any:
    """AURC of every estimator (bars, lower is better) per modality, with the chance AURC (a score
    without information: the error rate) as a dashed line; hatched bars are not significantly
    better than chance (permutation p > 0.05) or not ranked (too many items missing).

    ``table``: :meth:`reliable_lalm.experiments.uncertainty.UncertaintyStudy.estimator_table`.
    """
    groups = list(dict.fromkeys(table.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.3 * len(groups), 4.4), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        block = table.xs(group, level=0)
        names = list(block.index)
        y = np.arange(len(names))
        aurc = pd.to_numeric(block["AURC"]).to_numpy(dtype=float)
        p = pd.to_numeric(block["p (no better than chance)"]).to_numpy(dtype=float)
        weak = ~(p <= 0.05) | block["rank AURC"].isna().to_numpy()
        bars = ax.barh(y, np.nan_to_num(aurc), color=["tab:grey" if w else "tab:blue" for w in weak])
        for bar, w in zip(bars, weak):
            if w:
                bar.set_hatch("//")
        chance = pd.to_numeric(block["chance AURC"]).dropna()
        if len(chance):
            ax.axvline(float(chance.iloc[0]), color="black", linestyle="--", linewidth=1, label="chance")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("AURC (lower is better)")
        ax.set_title(group)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].invert_yaxis()  # the first estimator on top (once: the panels share the y axis)
    fig.tight_layout()
    return fig


def estimator_aurc_data(table: pd.DataFrame) -> pd.DataFrame:
    """The numbers :func:`estimator_aurc_figure` plots."""
    return table[["AURC", "chance AURC", "p (no better than chance)", "rank AURC"]]
