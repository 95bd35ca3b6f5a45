"""K@N IDK dataset: labels for every K from a hand-made sample store, skip reasons, prompts."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.training.idk_dataset import (AUDIO_ERROR, IDK_TARGET, NO_SAMPLES, SAMPLE_ERROR, TOO_FEW_SAMPLES,
                                       build_idk_dataset, idk_fraction_by_k,
                                       idk_fraction_frame, k_at_n_table, store_n_samples)
from reliable_lalm.core.prompts import IDK_INSTRUCTION
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.results import ResultStore

N = 5
CHOICES = ("dog bark", "siren", "rain")

# item id -> (task, answer, the N sampled outputs, or a special case)
SAMPLES = {
    "all5": ("sound", "dog bark", ["dog bark"] * 5),
    "four": ("sound", "siren", ["siren", "The answer is siren.", "siren", "Siren", "rain"]),
    "three": ("music", "rain", ["rain", "IDK", "dog bark", "rain", "rain"]),
    "two": ("music", "dog bark", ["dog bark", "I don't know", "dog bark", "rain", "siren"]),
    "one": ("speech", "siren", ["blah", "", "siren", "rain", "dog bark"]),
    "zero": ("speech", "rain", ["IDK", "IDK", "siren", "dog bark", "???"]),
}
# n_correct per item, by construction of the outputs above (normalize_answer rules).
N_CORRECT = {"all5": 5, "four": 4, "three": 3, "two": 2, "one": 1, "zero": 0}


def _item(tmp_path, item_id, task, answer, *, audio=True):
    path = tmp_path / f"{item_id}.wav"
    if audio:
        sf.write(str(path), (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    return BenchmarkItem(id=item_id, audio_path=str(path), question=f"What is heard in {item_id}?",
                         choices=CHOICES, answer=answer, task=task)


@pytest.fixture()
def setup(tmp_path):
    items = [_item(tmp_path, i, task, answer) for i, (task, answer, _) in SAMPLES.items()]
    # Items that must be skipped, each for its own reason.
    items.append(_item(tmp_path, "errored", "sound", "rain"))
    items.append(_item(tmp_path, "short", "sound", "rain"))
    items.append(_item(tmp_path, "absent", "music", "rain"))
    items.append(_item(tmp_path, "noaudio", "speech", "rain", audio=False))
    settings = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 0, "num_samples": N}
    store = ResultStore.open(tmp_path / "k_at_n", {"method": "baseline", "kind": "knn", "settings": settings})
    records = []
    for item_id, (_, _, outputs) in SAMPLES.items():
        # Written out of order: the sample index, not the file order, decides which are the first N.
        for j in reversed(range(N)):
            records.append({"item_id": item_id, "sample_index": j, "model_output": outputs[j], "error": None})
    for j in range(N):
        records.append({"item_id": "errored", "sample_index": j, "model_output": None if j == 2 else "rain",
                        "error": "audio file unreadable" if j == 2 else None})
    for j in range(3):
        records.append({"item_id": "short", "sample_index": j, "model_output": "rain", "error": None})
    for j in range(N):
        records.append({"item_id": "noaudio", "sample_index": j, "model_output": "rain", "error": None})
    store.extend(records)
    return items, store


def test_n_is_read_from_the_manifest(setup):
    _, store = setup
    assert store_n_samples(store) == N


def test_correct_counts_and_skip_reasons(setup):
    items, store = setup
    table = k_at_n_table(store, items)
    assert table.n == N
    assert {it.item_id: it.n_correct for it in table.items} == {**N_CORRECT, "noaudio": 5}
    assert table.skipped == {SAMPLE_ERROR: ["errored"], TOO_FEW_SAMPLES: ["short"], NO_SAMPLES: ["absent"]}
    assert {it.item_id: it.n_idk for it in table.items}["zero"] == 2


@pytest.mark.parametrize("k", range(0, N + 1))
def test_labels_for_every_k(setup, k):
    items, store = setup
    dataset = build_idk_dataset(items, store, k)
    targets = {ex.item_id: ex.target for ex in dataset.examples}
    answers = {i: a for i, (_, a, _) in SAMPLES.items()}
    expected = {i: (answers[i] if N_CORRECT[i] >= k else IDK_TARGET) for i in SAMPLES}
    assert {i: t for i, t in targets.items() if i in SAMPLES} == expected
    # The audio-less item is left out with its own reason, after the K@N check.
    assert "noaudio" not in targets and dataset.skipped[AUDIO_ERROR] == ["noaudio"]
    assert dataset.n_idk == sum(t == IDK_TARGET for t in expected.values())
    assert dataset.n_kept + dataset.n_idk == len(dataset.examples) == len(SAMPLES)
    assert dataset.summary()["sampling"]["temperature"] == 1.0 and dataset.sampling["num_samples"] == N
    for ex in dataset.examples:
        item = next(it for it in items if it.id == ex.item_id)
        assert ex.prompt == build_prompt("baseline", item.question, item.choices)
        assert ex.audio.dtype == np.float32 and len(ex.audio) == 8000


def test_idk_target_is_the_idk_prompts_refusal_word():
    assert IDK_TARGET == "IDK" and f"'{IDK_TARGET}'" in IDK_INSTRUCTION


def test_fraction_by_k_is_monotone_and_exact(setup):
    items, store = setup
    fractions = idk_fraction_by_k(store, items)
    assert list(fractions) == [1, 2, 3, 4, 5]
    # 7 usable items (6 + the audio-less one, which has 5 correct samples).
    assert fractions == {k: sum(c < k for c in [*N_CORRECT.values(), 5]) / 7 for k in range(1, 6)}
    values = list(fractions.values())
    assert all(a <= b for a, b in zip(values, values[1:]))
    by_task = idk_fraction_by_k(store, items, task="music")
    assert by_task == {1: 0.0, 2: 0.0, 3: 0.5, 4: 1.0, 5: 1.0}
    frame = idk_fraction_frame(store, items)
    assert list(frame.index) == [1, 2, 3, 4, 5] and list(frame.columns) == ["sound", "music", "speech", "all"]
    assert frame.loc[3, "music"] == pytest.approx(50.0)
    assert frame.attrs["skipped"] == {SAMPLE_ERROR: 1, TOO_FEW_SAMPLES: 1, NO_SAMPLES: 1}


def test_smaller_n_uses_the_first_samples(setup):
    items, store = setup
    table = k_at_n_table(store, items, n=3)
    counts = {it.item_id: it.n_correct for it in table.items}
    # First three outputs of each item; "short" has exactly 3 samples and is now usable.
    assert counts == {"all5": 3, "four": 3, "three": 1, "two": 2, "one": 1, "zero": 0, "noaudio": 3, "short": 3}
    # The error was sample 2, inside the first 3.
    assert "errored" in table.skipped[SAMPLE_ERROR]
    assert k_at_n_table(store, items, n=2).skipped.get(SAMPLE_ERROR) is None


def test_idk_prompt_variant_and_bad_arguments(setup):
    items, store = setup
    examples = build_idk_dataset(items, store, 5, prompt_method="idk").examples
    assert all(ex.prompt.endswith(IDK_INSTRUCTION) for ex in examples)
    with pytest.raises(ValueError):
        build_idk_dataset(items, store, 6).examples
    with pytest.raises(ValueError):
        build_idk_dataset(items, store, 1, prompt_method="mcot").examples
