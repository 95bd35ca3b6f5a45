"""Notebook glue: the paper's cross-validated LoRA row and the reference rows."""
from __future__ import annotations

import pytest

from reliable_lalm import experiments
from reliable_lalm.core.items import BenchmarkItem
from reference_helpers import round_half_up
from reliable_lalm.reporting.reference import load_reference


def _paper_table10_scores():
    t10 = load_reference("table10")
    t11 = load_reference("table11")
    scores: dict[str, dict] = {}
    for rec10, rec11 in zip(t10.to_dict("records"), t11.to_dict("records")):
        assert (rec10["train_modality"], rec10["test_modality"]) == (rec11["train_modality"], rec11["test_modality"])
        group = {"acc": rec10["acc"] / 100, "tru": rec10["tru"] / 100, "rel": rec10["rel"] / 100,
                 "d_con_subset": rec11["d_con"] / 100, "d_hum_subset": rec11["d_hum"] / 100, "rgi_subset": rec11["rgi"]}
        scores.setdefault(rec10["train_modality"], {"by_task": {}})["by_task"][rec10["test_modality"]] = group
    return scores


def test_cross_validated_rebuilds_the_papers_lora_rows():
    """Table 1/2's LoRA row is the mean over the two adapters trained on the other modalities."""
    lora = experiments.cross_validated(_paper_table10_scores())
    table1 = load_reference("table1").query("method == 'LoRA Fine-tuning'").set_index("modality")
    table2 = load_reference("table2").query("method == 'LoRA Fine-tuning'").set_index("modality")
    for task in ("sound", "music", "speech"):
        assert round_half_up(100 * lora["by_task"][task]["acc"]) == pytest.approx(table1.loc[task, "acc"])
        assert round_half_up(100 * lora["by_task"][task]["d_hum_subset"]) == pytest.approx(table2.loc[task, "d_hum"])
        assert round_half_up(lora["by_task"][task]["rgi_subset"]) == pytest.approx(table2.loc[task, "rgi"])
    assert round_half_up(100 * lora["acc"]) == pytest.approx(table1.loc["total", "acc"])


def test_cross_validated_leaves_out_undefined_values():
    scores = {"sound": {"by_task": {"music": {"rgi_subset": None, "acc": 0.5}}},
              "speech": {"by_task": {"music": {"rgi_subset": 0.2, "acc": 0.7}}}}
    lora = experiments.cross_validated(scores)
    assert lora["by_task"]["music"]["rgi_subset"] == 0.2
    assert lora["by_task"]["music"]["acc"] == pytest.approx(0.6)
    assert lora["acc"] is None  # sound and speech were never tested: no total


def _item(i, task, choices, answer):
    return BenchmarkItem(id=f"x{i}", audio_path="/nonexistent.wav", question="q?", choices=tuple(choices),
                         answer=answer, task=task)


def test_reference_rows():
    from reliable_lalm.core.scoring import score_reference_baselines

    items = [_item(i, "sound", ["dog", "cat"], "dog") for i in range(8)] + \
            [_item(10 + i, "music", ["a", "b", "c"], "c") for i in range(4)]
    rows = score_reference_baselines(items, seed=1)
    assert rows["Most Frequent Choice"]["acc"] == 1.0  # the answer text is always the most frequent
    assert 0 <= rows["Random Guess"]["acc"] <= 1
    assert rows["Random Guess"] == score_reference_baselines(items, seed=1)["Random Guess"]
