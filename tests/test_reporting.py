"""Table builders, table writers (CSV/MD/TeX, side by side with the paper) and figures."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless and deterministic

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reliable_lalm import paths
from reliable_lalm import reporting  # noqa: E402
from reliable_lalm.reporting import (compare_with_reference, figure3, figure4, figure5, format_number,  # noqa: E402
                                     paper_figure5_points, paper_table, plot_alpha_ablation, plot_idk_threshold,
                                     plot_rgi_heatmap, read_table, save_figure, save_table, table1, table2, table3,
                                     table10, table11, table12)

def group(nc: int, nr: int, nw: int, *, ncc: int | None = None, nww: int | None = None,
          base_c: int | None = None, base_w: int | None = None) -> dict:
    """A score group as ``rlalm score`` returns it (fractions), with gains when a baseline is given."""
    n = nc + nr + nw
    acc, rej, tru = nc / n, nr / n, 1 - nw / n
    out = {"n": n, "n_correct": nc, "n_rejected": nr, "n_wrong": nw, "n_invalid": 0,
           "acc": acc, "tru": tru, "rej": rej, "rel": rej * acc + (1 - rej) * tru}
    if base_c is not None:
        d_con, d_hum = (base_c - ncc) / base_c, (base_w - nww) / base_w
        out.update(d_con=d_con, d_hum=d_hum, rgi=math.log10(d_hum / d_con) if d_con else None)
        sub = base_c + base_w
        out.update(d_con_subset=(base_c - ncc) / sub, d_hum_subset=(base_w - nww) / sub,
                   rgi_subset=math.log10((base_w - nww) / (base_c - ncc)) if base_c != ncc else None)
    return out


def score(by_task: dict, total: dict) -> dict:
    return {**total, "by_task": by_task}


# IDK prompting on sound in the paper: baseline 203 correct / 130 wrong of 333; 36 correct answers
# and 67 wrong answers lost -> ΔCon 10.81 %, ΔHum 20.12 %, RGI 0.27 (subset convention).
IDK_SOUND = group(194, 60, 79, ncc=167, nww=63, base_c=203, base_w=130)


def test_metrics_table_layout_and_percent():
    rows = {"Baseline": score({"sound": group(203, 0, 130), "music": group(184, 0, 150)}, group(387, 0, 280)),
            "IDK Prompting": score({"sound": IDK_SOUND}, group(194, 60, 79))}
    df = table1(rows, modalities=("sound", "music"))
    assert list(df.index) == ["Baseline", "IDK Prompting"] and df.index.name == "Method"
    assert list(df.columns) == [(m, k) for m in ("Sound", "Music", "Total") for k in ("Acc%", "Tru%", "Rel%")]
    assert df.loc["Baseline", ("Sound", "Acc%")] == pytest.approx(60.96, abs=5e-3)
    assert df.loc["IDK Prompting", ("Sound", "Tru%")] == pytest.approx(76.28, abs=5e-3)
    assert df.loc["IDK Prompting", ("Sound", "Rel%")] == pytest.approx(73.03, abs=5e-3)
    assert math.isnan(df.loc["IDK Prompting", ("Music", "Acc%")])  # no music scores: n/a
    assert df.loc["IDK Prompting", ("Total", "Acc%")] == pytest.approx(100 * 194 / 333)


def test_gain_table_conventions_and_undefined_rgi():
    undefined = {**IDK_SOUND, "rgi": None, "rgi_subset": float("nan")}
    rows = {"IDK Prompting": score({"sound": IDK_SOUND}, IDK_SOUND), "Broken": score({"sound": undefined}, undefined)}
    sub = table2(rows, modalities=())
    assert list(sub.columns) == [("Total", "ΔCon%"), ("Total", "ΔHum%"), ("Total", "RGI")]
    assert [round(v, 2) for v in sub.loc["IDK Prompting"]] == [10.81, 20.12, 0.27]
    cls = table2(rows, "class", modalities=())
    assert [round(v, 2) for v in cls.loc["IDK Prompting"]] == [17.73, 51.54, 0.46]
    assert math.isnan(sub.loc["Broken", ("Total", "RGI")]) and math.isnan(cls.loc["Broken", ("Total", "RGI")])
    with pytest.raises(ValueError, match="convention"):
        table2(rows, "log")


def test_modality_groups_come_from_the_scores():
    # A benchmark with other modality groups (MMAR has seven) gets its own columns, in its order.
    rows = {"Baseline": score({"speech": group(2, 0, 2), "mix-sound-music": group(1, 1, 2)}, group(3, 1, 4))}
    df = table1(rows)
    assert [c[0] for c in df.columns[::3]] == ["Speech", "Mix Sound Music", "Total"]
    assert df.loc["Baseline", ("Mix Sound Music", "Acc%")] == 25.0
    t3 = table3({("demo", "no"): rows["Baseline"], ("demo", "yes"): rows["Baseline"]})
    assert t3.index.names == ["Models", "IDK Prompting"] and list(t3.index) == [("demo", "no"), ("demo", "yes")]


def test_metrics_of_summarize_output_are_read_from_total():
    # reliable_lalm.core.metrics.summarize nests the total under "total".
    summary = {"total": group(1, 1, 2), "by_task": {"sound": group(1, 1, 2)}}
    df = table1({"x": summary}, modalities=("sound",))
    assert df.loc["x", ("Total", "Acc%")] == 25.0 and df.loc["x", ("Sound", "Tru%")] == 50.0


def _cells(rgi_by_cell: dict | None = None) -> pd.DataFrame:
    """Cross-modal cells as CrossModal.results() gives them (fractions), every train x test pair."""
    rows = []
    for train in ("sound", "music", "speech"):
        for test in ("sound", "music", "speech"):
            rows.append({"train": train, "test": test, "acc": 0.5, "tru": 0.7, "rej": 0.2, "rel": 0.64,
                         "d_con": 0.1, "d_hum": 0.2, "rgi": (rgi_by_cell or {}).get((train, test), 0.3),
                         "train_idk_fraction": {"sound": 0.6306, "music": 0.6198, "speech": 0.6547}[train]})
    return pd.DataFrame(rows)


def test_cross_modal_tables_in_the_paper_layout():
    cells = _cells()
    t10, t11, t12 = table10(cells), table11(cells), table12(cells)
    for ours, name in ((t10, "table10"), (t11, "table11"), (t12, "table12")):
        ref = paper_table(name)
        assert list(ours.index) == list(ref.index) == ["Sound", "Music", "Speech"]  # the paper's labels
        assert ours.index.name == ref.index.name == "Training Modality"
        assert list(ours.columns) == list(ref.columns)
    assert math.isnan(t10.loc["Sound", ("Sound", "Acc%")]) and t10.loc["Sound", ("Music", "Acc%")] == 50.0
    md = reporting.to_markdown(t10)
    assert "| Training Modality | Sound Acc% | Sound Tru% |" in md
    assert "| Sound | - | - | - | 50.00 |" in md  # "-" where the paper leaves the cell empty
    assert t11.loc["Music", ("Sound", "RGI")] == pytest.approx(0.3)
    assert list(t12.columns) == [("Rejection Rate (%)", c) for c in ("IDK Dataset", "Sound", "Music", "Speech")]
    assert t12.loc["Music", ("Rejection Rate (%)", "IDK Dataset")] == pytest.approx(61.98)
    assert t12.loc["Sound", ("Rejection Rate (%)", "Sound")] == pytest.approx(20.0)  # in-domain cell shown
    # Side by side with the paper: every cell of ours finds the paper's, the diagonal is dropped.
    side = compare_with_reference(t10, paper_table("table10"))
    assert len(side) == 18 and not side["paper"].isna().any()
    # One training modality (notebook 04's row): all test columns, "-" on its own.
    row = table10(cells[cells["train"] == "music"])
    assert list(row.index) == ["Music"] and row.shape == (1, 9) and math.isnan(row.loc["Music", ("Music", "Rel%")])
    # Column and row order follow `modalities` when given.
    assert list(table12(cells, modalities=("speech", "sound")).index) == ["Speech", "Sound", "Music"]


def test_figure3_data_blanks_the_diagonal():
    import matplotlib.pyplot as plt

    fig = figure3(_cells({("sound", "music"): 0.19, ("music", "sound"): 0.36, ("sound", "sound"): 9.0}))
    mat = fig.data
    assert mat.index.name == "Training Modality" and mat.columns.name == "Test Modality"
    assert mat.loc["Sound", "Music"] == 0.19 and math.isnan(mat.loc["Sound", "Sound"])  # diagonal blanked
    assert mat.loc["Music", "Sound"] == 0.36
    assert fig.figure.axes[0].get_ylabel() == "Training Modality"
    plt.close(fig.figure)


@pytest.mark.parametrize("value, text", [
    (0.355, "0.36"), (2.675, "2.68"), (10.8108, "10.81"), (-0.001, "0.00"), (-0.27, "-0.27"),
    (None, "n/a"), (float("nan"), "n/a"), (np.float64(55.6), "55.60"), (333, "333"), ("x", "x"),
])
def test_format_number_rounds_half_up_like_the_paper(value, text):
    assert format_number(value) == text


def test_save_table_writes_csv_md_tex(tmp_path):
    undefined = {**IDK_SOUND, "rgi_subset": None}
    rows = {"IDK Prompting": score({"sound": IDK_SOUND, "music": undefined}, IDK_SOUND)}
    df = table2(rows, modalities=("sound", "music"))[[(m, k) for m in ("Sound", "Music")
                                                      for k in ("ΔCon%", "ΔHum%", "RGI")]]
    out = save_table(df, "table2", "demo", caption="Relative gains & RGI_subset", out_dir=tmp_path)
    assert set(out) == {"csv", "md", "tex"} and all(p.parent == tmp_path for p in out.values())

    back = read_table(out["csv"])
    assert list(back.index) == ["IDK Prompting"] and back.shape == (1, 6)
    assert back.loc["IDK Prompting", ("Sound", "ΔCon%")] == pytest.approx(10.8108, abs=1e-4)
    assert math.isnan(back.loc["IDK Prompting", ("Music", "RGI")])

    md = out["md"].read_text()
    assert md.startswith("Table: Relative gains & RGI_subset\n")
    assert "| Method | Sound ΔCon% | Sound ΔHum% | Sound RGI | Music ΔCon% | Music ΔHum% | Music RGI |" in md
    assert "| IDK Prompting | 10.81 | 20.12 | 0.27 | 10.81 | 20.12 | n/a |" in md

    tex = out["tex"].read_text()
    assert r"\multicolumn{3}{c}{Sound} & \multicolumn{3}{c}{Music}" in tex
    assert r"\cmidrule(lr){2-4} \cmidrule(lr){5-7}" in tex
    assert r"Method & $\Delta$Con\% & $\Delta$Hum\% & RGI" in tex
    assert r"IDK Prompting & 10.81 & 20.12 & 0.27 & 10.81 & 20.12 & n/a \\" in tex
    assert r"\caption{Relative gains \& RGI\_subset}" in tex and r"\label{tab:table2}" in tex
    assert tex.count(r"\\") == 3  # two header lines and one row


def test_save_table_default_location_is_tables_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "TABLES_DIR", tmp_path)
    df = table1({"A": score({}, group(1, 0, 1))}, modalities=())
    out = save_table(df, "t", "ci", caption="c")
    assert out["csv"] == tmp_path / "ci" / "t.csv" and out["tex"].is_file()


def test_side_by_side_with_reference(tmp_path):
    ours = table1({"Baseline": score({"sound": group(203, 0, 130)}, group(203, 0, 130)),
                   "Extra": score({"sound": group(1, 0, 1)}, group(1, 0, 1))})
    cols = ours.columns
    reference = pd.DataFrame([[60.96, 60.96, 60.96, 55.60, 55.60, 55.60],
                              [26.72, 26.72, 26.72, 26.00, 26.00, 26.00]],
                             index=pd.Index(["baseline ", "Random Guess"], name="Method"), columns=cols)
    out = save_table(ours, "table1", "demo", caption="Table 1.", reference=reference, out_dir=tmp_path)
    assert {"vs_paper_csv", "vs_paper_md"} <= set(out)

    side = compare_with_reference(ours, reference)
    assert list(side.columns) == ["ours", "paper", "diff"]
    assert side.index.names == ["Method", "Modality", "Metric"]
    row = side.loc[("Baseline", "Total", "Acc%")]  # matched despite case and the trailing space
    assert row["ours"] == pytest.approx(60.96, abs=5e-3) and row["paper"] == 55.60
    assert row["diff"] == pytest.approx(100 * 203 / 333 - 55.60)
    assert math.isnan(side.loc[("Extra", "Sound", "Acc%"), "paper"])  # a row the paper lacks
    assert side.attrs["paper_only_rows"] == ["Random Guess"]

    md = out["vs_paper_md"].read_text()
    assert "| Method | Modality | Metric | ours | paper | diff |" in md
    assert "| Baseline | Total | Acc% | 60.96 | 55.60 | 5.36 |" in md
    assert "| Extra | Sound | Acc% | 50.00 | n/a | n/a |" in md
    assert "paper rows without ours: Random Guess" in md
    back = read_table(out["vs_paper_csv"], index_levels=3)
    assert back.shape == (12, 3)  # 2 rows x 2 modalities x 3 metrics

    bad = reference.drop(columns=[("Total", "Rel%")])
    with pytest.raises(ValueError, match="reference lacks columns"):
        compare_with_reference(ours, bad)
    # A model the paper did not evaluate: shown without paper values, never an exception (issue 17.2).
    unmatched = compare_with_reference(ours, reference.rename(index={"baseline ": "X", "Random Guess": "Y"}))
    assert unmatched["paper"].isna().all() and not unmatched["ours"].isna().all()


@pytest.mark.skipif(not (paths.REFERENCE_TABLES_DIR / "table2.csv").is_file(), reason="reference tables absent")
def test_paper_tables_in_builder_layout_compare_cleanly():
    t2 = paper_table("table2")
    ours = table2({"IDK Prompting": score({"sound": IDK_SOUND}, IDK_SOUND)})[[("Sound", c) for c in
                                                                              ("ΔCon%", "ΔHum%", "RGI")]]
    side = compare_with_reference(ours, t2[[("Sound", c) for c in ("ΔCon%", "ΔHum%", "RGI")]])
    # The printed numbers are reproduced from integer counts to the paper's two decimals.
    assert side["diff"].abs().max() < 0.005
    t10 = paper_table("table10")
    assert list(t10.index) == ["Sound", "Music", "Speech"] and t10.shape == (3, 9)
    assert reporting.to_markdown(t10).count(" - ") == 9  # the diagonal the paper prints as "-"
    t12 = paper_table("table12")
    assert t12.loc["Speech", ("Rejection Rate (%)", "IDK Dataset")] == pytest.approx(65.47)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def _heatmap_df() -> pd.DataFrame:
    return pd.DataFrame([[np.nan, 0.19, 0.23], [0.36, np.nan, 0.15], [0.35, 0.27, np.nan]],
                        index=pd.Index(["Sound", "Music", "Speech"], name="Training Modality"),
                        columns=pd.Index(["Sound", "Music", "Speech"], name="Test Modality"))


def test_figures_are_byte_identical_on_rerun(tmp_path):
    import matplotlib.pyplot as plt

    first = save_figure(plot_rgi_heatmap(_heatmap_df()), "figure3", "demo", out_dir=tmp_path / "a", data=_heatmap_df())
    plt.close("all")
    second = save_figure(plot_rgi_heatmap(_heatmap_df()), "figure3", "demo", out_dir=tmp_path / "b", data=_heatmap_df())
    plt.close("all")
    assert set(first) == {"png", "pdf", "csv"} and first["png"].name == "figure3.png"
    for kind in ("png", "pdf"):
        assert first[kind].read_bytes() == second[kind].read_bytes(), kind
    pdf = first["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf
    assert first["png"].read_bytes().startswith(b"\x89PNG")


def test_save_figure_default_location(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path)
    fig, _ = plt.subplots()
    out = save_figure(fig, "f", "ci", data=pd.DataFrame({"x": [0.5]}))
    plt.close(fig)
    assert out == {"png": tmp_path / "ci" / "f.png", "pdf": tmp_path / "ci" / "f.pdf", "csv": tmp_path / "ci" / "f.csv"}


def test_every_figure_is_saved_with_its_data(tmp_path):
    """A figure without the numbers it plots could only be compared by bytes, which are not portable."""
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    with pytest.raises(TypeError):
        save_figure(fig, "f", "ci", out_dir=tmp_path)
    with pytest.raises(TypeError, match="DataFrame"):
        save_figure(fig, "f", "ci", out_dir=tmp_path, data=None)
    plt.close(fig)


def test_rgi_heatmap_marks_missing_cells():
    import matplotlib.pyplot as plt

    fig = plot_rgi_heatmap(_heatmap_df())
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["-", "0.19", "0.23", "0.36", "-", "0.15", "0.35", "0.27", "-"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Sound", "Music", "Speech"]
    assert ax.get_ylabel() == "Training Modality"
    plt.close(fig)


def test_alpha_ablation_three_panels_with_error_bars():
    import matplotlib.pyplot as plt

    def cell(alpha: float, test: str, rej: float, rgi: float) -> dict:
        # One line of CrossModal.alpha_sweep(): fractions, bootstrap bounds for the rejection rate only.
        return {"alpha": alpha, "test": test, "rej": rej, "rej_low": rej - 0.02, "rej_high": rej + 0.03,
                "rel": 0.6, "rgi": rgi}

    sweep = pd.DataFrame([cell(a, t, rej, rgi) for a, rej, rgi in ((1, 0.05, 0.5), (16, 0.2, 0.1), (64, 0.4, -0.1))
                          for t in ("sound", "music")])
    built = figure4(sweep)
    plt.close(built.figure)
    assert list(built.data.columns) == ["rej", "rej_low", "rej_high", "rel", "rgi"]
    assert built.data.index.names == ["alpha", "modality"]
    frame = built.data.reset_index()
    assert frame["rej"].tolist() == pytest.approx([5, 5, 20, 20, 40, 40])
    assert frame["rgi"].tolist() == [0.5, 0.5, 0.1, 0.1, -0.1, -0.1]
    fig = plot_alpha_ablation(frame)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["(a) Rejection Rate (%)", "(b) Reliability (%)", "(c) RGI"]
    assert fig.axes[0].get_xscale() == "log"  # alphas 1..64 span a factor of 64
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Sound", "Music"]
    # Error bars (LineCollection) where CI columns exist, none for RGI.
    assert len(fig.axes[0].collections) == 2 and len(fig.axes[2].collections) == 0
    plt.close(fig)
    with pytest.raises(ValueError, match="missing"):
        plot_alpha_ablation(frame.drop(columns=["rgi"]))


def test_idk_threshold_bars_and_paper_points():
    import matplotlib.pyplot as plt

    fig = plot_idk_threshold(pd.DataFrame({"k": [5, 1, 2, 3, 4], "idk_fraction": [0.64, 0.5, 0.55, 0.58, 0.6]}),
                             reference=paper_figure5_points())
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [50.0, 55.0, 58.0, 60.0, 64.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1@5", "2@5", "3@5", "4@5", "5@5"]
    (paper,) = [line for line in ax.lines if line.get_label() == "paper"]
    assert list(paper.get_xdata()) == [0, 4] and list(paper.get_ydata()) == [50.2, 63.5]
    plt.close(fig)
    with pytest.raises(ValueError, match="idk_percent"):
        plot_idk_threshold(pd.DataFrame({"k": [1], "share": [0.5]}))


def test_figure5_from_the_idk_fractions():
    import matplotlib.pyplot as plt

    fractions = pd.DataFrame({"sound": [20.0, 60.0], "all": [18.0, 70.0]}, index=pd.Index([1, 5], name="k"))
    built = figure5(fractions, with_paper=True)
    ax = built.figure.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [18.0, 70.0] and built.data is fractions
    assert [line.get_label() for line in ax.lines] == ["paper"]
    plt.close(built.figure)
    without = figure5(fractions)
    assert not without.figure.axes[0].lines
    plt.close(without.figure)
    with pytest.raises(ValueError, match="'all'"):
        figure5(fractions.drop(columns=["all"]))


def test_format_number_rounds_the_decimal_a_ratio_of_counts_stands_for():
    # Table 1's LoRA Rel cell: the mean of two adapters' Rel in percent (127.75 / 2), as floats give it.
    mean = (0.6375 + 0.64) / 2 * 100
    assert repr(mean) != "63.875"  # the float lies just below the half ...
    assert format_number(mean) == "63.88"  # ... the printed cell rounds the decimal half up
    counts = (511 / 800) * 100  # 63.875 from counts directly
    assert format_number(counts) == "63.88"
    assert format_number(63.8749) == "63.87" and format_number(-63.875 + 1e-13) == "-63.88"
    assert format_number(1e-20) == "0.00" and format_number(12345678.125) == "12345678.13"


def test_csv_cells_round_half_up_with_four_decimals():
    from reliable_lalm.reporting import tables

    df = pd.DataFrame({"x": [61.00125, -1e-9, math.nan]}, index=["a", "b", "c"])
    assert "%.4f" % 61.00125 == "61.0012"  # printf rounds the binary value, which lies below the half
    assert tables._csv(df).splitlines()[1:] == ["a,61.0013", "b,0.0000", "c,"]
