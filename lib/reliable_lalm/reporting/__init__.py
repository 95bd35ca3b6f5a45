"""Reporting: the paper's tables and figures, each built by one function of :mod:`.artifacts`
(``table1`` ... ``table12``, ``figure3`` ... ``figure5``, and ``paper_table``: the paper's numbers in
the same layouts), written by :mod:`.tables` (CSV, Markdown, LaTeX; PNG, PDF), and the paper's
published numbers (:mod:`.reference`); tables on screen in the paper's units (:mod:`.display`); the
per-item report of a run (:mod:`.item_report`); the figures of notebooks 08 and 09 (:mod:`.abstention`,
:mod:`.uncertainty`). The notebooks use it as ``from reliable_lalm import reporting``."""
from reliable_lalm.reporting.abstention import reliability_figure, risk_coverage_figure
from reliable_lalm.reporting.artifacts import (PaperFigure, figure3, figure4, figure5, paper_figure5_points,
                                               paper_table, table1, table2, table3, table10, table11, table12)
from reliable_lalm.reporting.display import interval_table, styled, transition_table
from reliable_lalm.reporting.item_report import build_item_report, show_items, write_report
from reliable_lalm.reporting.tables import (compare_with_reference, format_number, plot_alpha_ablation,
                                            plot_idk_threshold, plot_rgi_heatmap, read_table, save_figure, save_table,
                                            to_latex, to_markdown)

__all__ = ["PaperFigure", "build_item_report", "compare_with_reference", "interval_table", "show_items", "styled",
           "transition_table", "write_report", "figure3", "figure4", "figure5", "format_number",
           "paper_figure5_points", "paper_table", "plot_alpha_ablation", "plot_idk_threshold", "plot_rgi_heatmap",
           "read_table", "reliability_figure", "risk_coverage_figure", "save_figure", "save_table", "table1", "table10", "table11", "table12", "table2", "table3",
           "to_latex", "to_markdown"]
