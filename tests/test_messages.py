"""Messages a user reads: offending values and exit status of ``benchmark validate``, decoding
every clip with ``--check-audio``, ``score --by`` rows, the warnings of a run whose outputs are
mostly invalid, per-item warnings, and ``rlalm models`` listing without building anything."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from reliable_lalm.cli import main
from reliable_lalm.cli.infer import report_store_problems
from reliable_lalm.core.items import load_benchmark
from reliable_lalm.core.results import ResultStore
from reliable_lalm.core.scoring import invalid_outputs_warning

CHOICES = ["dog", "cat", "bird"]


def _bench(folder: Path, extra: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for n, task in enumerate(["sound", "music", "speech"]):
        sf.write(folder / f"a{n}.wav", np.zeros(1600, dtype=np.float32), 16000)
        records.append({"id": f"q{n}", "audio_id": f"a{n}.wav", "question": "Which animal?", "choices": CHOICES,
                        "answer": "dog", "task": task})
    path = folder / "bench.json"
    path.write_text(json.dumps(records + (extra or [])))
    return path


def test_validate_prints_offending_values_and_exits_1_on_rejections(tmp_path, capsys):
    bad = [{"id": "q7", "audio_id": "a0.wav", "question": "Capital?", "choices": ["Rome", "Oslo"], "answer": "Paris",
            "task": "sound"},
           {"id": "q8", "audio_id": "a0.wav", "question": "Which?", "choices": CHOICES, "answer": "dog", "task": "smell"}]
    path = _bench(tmp_path, bad)
    assert main(["benchmark", "validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "accepted=3 rejected=2"
    assert "q7 (record 3): answer 'Paris' is not among the choices ['Rome', 'Oslo']" in captured.out
    assert "q8 (record 4): task 'smell' is not one of" in captured.out
    assert "2 record(s) rejected" in captured.err and "exit status 1" in captured.err
    assert main(["benchmark", "validate", str(_bench(tmp_path / "clean"))]) == 0


def test_check_audio_decodes_every_clip_and_names_the_fix(tmp_path, capsys):
    extra = [{"id": "corrupt", "audio_id": "corrupt.wav", "question": "Which?", "choices": CHOICES, "answer": "dog",
              "task": "sound"},
             {"id": "aac", "audio_id": "clip.m4a", "question": "Which?", "choices": CHOICES, "answer": "dog",
              "task": "music"}]
    path = _bench(tmp_path, extra)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    (tmp_path / "clip.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really audio")
    assert main(["benchmark", "validate", str(path)]) == 0  # files exist: accepted without --check-audio
    capsys.readouterr()
    assert main(["benchmark", "validate", str(path), "--check-audio"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "accepted=3 rejected=2"
    corrupt = next(line for line in out.splitlines() if line.strip().startswith("corrupt:"))
    assert "audio file unreadable" in corrupt and "probably corrupt or truncated" in corrupt
    aac = next(line for line in out.splitlines() if line.strip().startswith("aac:"))
    assert ".m4a" in aac and "ffmpeg" in aac


def _pred(tmp_path: Path, outputs: list[str]) -> Path:
    records = [{"id": f"q{n}", "choices": CHOICES, "answer": "dog", "task": task, "model_output": out,
                "difficulty": "easy"}
               for n, (task, out) in enumerate(zip(["sound", "music", "speech"] * 2, outputs))]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records))
    return path


def test_score_by_task_lists_each_modality_once(tmp_path, capsys):
    path = _pred(tmp_path, ["dog", "cat", "IDK", "dog", "dog", "bird"])
    assert main(["score", str(path), "--by", "task,difficulty", "--format", "table"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith("-")]
    assert rows[:6] == ["group", "total", "sound", "music", "speech", "difficulty=easy"]
    assert "task=sound" not in rows and rows.count("sound") == 1


def test_mostly_invalid_outputs_warn_with_what_to_try(tmp_path, capsys):
    path = _pred(tmp_path, ["purple", "hmm", "dog", "zzz", "???", "cat"])
    assert main(["score", str(path)]) == 0
    err = capsys.readouterr().err
    assert "4 of 6 outputs (67 %) match no choice and no refusal" in err and "--normalizer openai" in err
    assert invalid_outputs_warning(3, 6) is None  # half is not most
    path = _pred(tmp_path, ["dog", "cat", "IDK", "dog", "dog", "zzz"])
    assert main(["score", str(path)]) == 0
    assert "match no choice" not in capsys.readouterr().err


def test_infer_prints_each_item_warning_and_the_invalid_share(tmp_path, capsys):
    bench = load_benchmark(_bench(tmp_path / "bench"))
    store = ResultStore.open(tmp_path / "store", {"method": "baseline"})
    store.extend([{"item_id": "q0", "model_output": "purple", "warning": "audio is 45.0 s, longer than the window"},
                  {"item_id": "q1", "model_output": "hmm, green perhaps", "warning": None},
                  {"item_id": "q2", "model_output": "dog", "warning": None}])
    report_store_problems(tmp_path / "store", bench)
    err = capsys.readouterr().err
    assert "warning q0: audio is 45.0 s, longer than the window" in err
    assert "2 of 3 outputs (67 %)" in err


def test_models_lists_without_building_anything(monkeypatch, capsys):
    from reliable_lalm.models import standin

    def refuse(*args, **kwargs):
        raise AssertionError("rlalm models built a checkpoint")

    monkeypatch.setattr(standin, "layout_random_source", refuse)
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("qwen2-audio-7b-layout-random"))
    assert "built on first use" in row


def test_store_lists_item_warnings_of_one_sample_index(tmp_path):
    store = ResultStore.open(tmp_path / "s", {"method": "baseline"})
    store.extend([{"item_id": "a", "sample_index": 0, "warning": "clip too long"},
                  {"item_id": "a", "sample_index": 1, "warning": "clip too long"},
                  {"item_id": "b", "sample_index": 0, "warning": None}])
    assert store.item_warnings() == [("a", "clip too long")]
