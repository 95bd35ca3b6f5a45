"""Reporting: paper-layout tables (CSV, Markdown, LaTeX) and figures (PNG, PDF), and the paper's
published numbers (:mod:`.reference`). The notebooks use it as ``from reliable_lalm import reporting``."""
from reliable_lalm.reporting.tables import (PAPER_FIGURE5, compare_with_reference, format_number, gain_table,
                                            metrics_table, paper_table, plot_alpha_ablation, plot_idk_threshold,
                                            plot_rgi_heatmap, read_table, save_figure, save_table, to_latex,
                                            to_markdown)

__all__ = ["PAPER_FIGURE5", "compare_with_reference", "format_number", "gain_table", "metrics_table", "paper_table",
           "plot_alpha_ablation", "plot_idk_threshold", "plot_rgi_heatmap", "read_table", "save_figure", "save_table",
           "to_latex", "to_markdown"]
