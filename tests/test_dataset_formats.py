"""Benchmarks in their Hugging Face release formats (parquet file or folder, save_to_disk, hf:<repo>).

The files here are built offline, a few rows each, from the releases' documented columns (MMAU-Pro's
``test.parquet``: id, audio_path as a list, question, answer, choices as a list, category, sub-cat,
length_type, perceptual_skills, reasoning_skills, transcription, task_classification,
task_identifier, kwargs; MMSU's and MMAU's own schemas), not taken from the releases, which are not
available here. Audio is given both as paths and as embedded bytes. MMAU's and MMAR's shared
metadata (../shared) is converted to parquet here and must load exactly as the JSON does.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from reliable_lalm import paths
from reliable_lalm.benchmarks import hf_data
from reliable_lalm.benchmarks.official import export_for_benchmark
from reliable_lalm.benchmarks.registry import load, parse_benchmark
from reliable_lalm.cli import main
from reliable_lalm.core.breakdowns import breakdown, parse_by
from reliable_lalm.core.fingerprint import item_fingerprint

SR = 16_000


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own content-keyed cache (where embedded clips are written)."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(paths, "CACHE_DIR", cache)
    return cache


def wav_bytes(seed: int, seconds: float = 0.5) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(buf, (0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR, format="WAV")
    return buf.getvalue()


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------------
# MMAU-Pro: its test.parquet
# ------------------------------------------------------------------------------------------------

PRO_COLUMNS = ("id", "audio_path", "question", "answer", "choices", "category", "sub-cat", "length_type",
               "perceptual_skills", "reasoning_skills", "transcription", "task_classification",
               "task_identifier", "kwargs")


def pro_rows() -> list[dict]:
    def row(i, category, audio, choices, answer, **kw):
        base = {"id": i, "audio_path": audio, "question": f"Question {i}?", "answer": answer, "choices": choices,
                "category": category, "sub-cat": kw.get("sub", "source id"), "length_type": kw.get("length", "short"),
                "perceptual_skills": kw.get("perc", ["sound event detection"]),
                "reasoning_skills": kw.get("reas", ["temporal"]), "transcription": kw.get("tr"),
                "task_classification": kw.get("tc"), "task_identifier": kw.get("ti"), "kwargs": kw.get("kwargs")}
        assert tuple(base) == PRO_COLUMNS
        return base
    return [
        row("p-sound", "sound", ["data/p-sound.wav"], ["a dog", "rain", "a train"], "rain"),
        row("p-music", "music", ["data/p-music.wav"], ["violin", "piano"], "piano", sub="instrument",
            length="long", perc=["timbre"], reas=["comparison", "counting"]),
        row("p-speech", "speech", ["data/p-speech.wav"], ["happy", "sad", "angry", "neutral"], "sad",
            tr="I lost my keys again.", sub="emotion"),
        row("p-open", "open", ["data/p-open.wav"], None, "A street with cars and a siren."),
        row("p-if", "instruction following", ["data/p-if.wav"], None, "", tc="format",
            ti="detectable_format:number_bullet_lists", kwargs='{"num_bullets": 3}'),
        row("p-multi", "sound", ["data/p-a.wav", "data/p-b.wav"], ["the first", "the second"], "the first"),
        row("p-spatial", "spatial", ["data/p-spatial.wav"], ["left", "right"], "left", sub="direction"),
    ]


def clip_names(rows):
    return sorted({p for r in rows for p in r["audio_path"]})


def write_pro(folder: Path, embedded: bool) -> Path:
    """MMAU-Pro's test.parquet, audio as paths (files in data/) or as embedded bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = pro_rows()
    clips = {name: wav_bytes(n) for n, name in enumerate(clip_names(rows))}
    if embedded:
        for r in rows:
            r["audio_path"] = [{"bytes": clips[p], "path": p} for p in r["audio_path"]]
    else:
        for name, data in clips.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    out = folder / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(out))
    return out


@pytest.mark.parametrize("embedded", [False, True], ids=["paths", "bytes"])
def test_mmau_pro_parquet(tmp_path, cache_dir, embedded):
    parquet = write_pro(tmp_path / "pro", embedded)
    before = files_under(parquet.parent)
    bench = load(f"mmau-pro:{parquet}", check_audio=True)
    assert files_under(parquet.parent) == before  # nothing written beside the user's data
    assert [i.id for i in bench.items] == ["p-sound", "p-music", "p-speech", "p-spatial"]
    causes = {r.item_id: r.cause for r in bench.rejected}
    assert causes == {"p-open": "open-ended item skipped (no options to choose from)",
                      "p-if": "instruction-following item skipped (scored by format checks, not a choice)",
                      "p-multi": "multi-audio item skipped (2 clips; the backends take one)"}
    by_id = {i.id: i for i in bench.items}
    music = by_id["p-music"]
    assert (music.task, music.sub_category, music.answer) == ("music", "instrument", "piano")
    # every release column stays in the record (exports keep them); embedded bytes become the clip's name
    assert tuple(music.record) == PRO_COLUMNS
    assert music.record["audio_path"] == ["data/p-music.wav"]
    clip = wav_bytes(clip_names(pro_rows()).index("data/p-music.wav"))
    audio = Path(music.audio_path)
    if embedded:
        assert audio.parent == cache_dir / hf_data.AUDIO_CACHE_SUBDIR
        assert audio.name == hashlib.sha256(clip).hexdigest() + ".wav"
    else:
        assert audio == (parquet.parent / "data" / "p-music.wav").resolve()
    assert audio.read_bytes() == clip
    assert item_fingerprint(music)["audio"] == hashlib.sha256(clip).hexdigest()[:16]  # by content


def test_embedded_and_path_audio_give_the_same_items_and_keys(tmp_path):
    by_path = load(f"mmau-pro:{write_pro(tmp_path / 'a', embedded=False)}")
    by_bytes = load(f"mmau-pro:{write_pro(tmp_path / 'b', embedded=True)}")
    assert [item_fingerprint(i) for i in by_path.items] == [item_fingerprint(i) for i in by_bytes.items]
    assert [i.record for i in by_path.items] == [i.record for i in by_bytes.items]
    # loading again writes nothing new (the cache is keyed by content)
    cache = hf_data.audio_cache_dir()
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    load(f"mmau-pro:{tmp_path / 'b' / 'test.parquet'}")
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamp


def test_mmau_pro_breakdown_keys(tmp_path):
    bench = load(f"mmau-pro:{write_pro(tmp_path, embedded=False)}", check_audio=False)
    fields = [{**i.scoring_record(), "task": i.task} for i in bench.items]
    keys = parse_by("sub-cat,length_type,perceptual_skills,reasoning_skills")
    assert keys == [("sub-category",), ("length_type",), ("perceptual_skills",), ("reasoning_skills",)]
    by = breakdown(fields, ["correct", "wrong", "rejected", "correct"], keys)
    assert by["sub-category"]["instrument"]["n"] == 1 and by["sub-category"]["source id"]["n"] == 1
    assert set(by["length_type"]) == {"short", "long"}
    assert by["reasoning_skills"]["comparison; counting"]["n"] == 1


@pytest.mark.parametrize("embedded", [False, True], ids=["paths", "bytes"])
def test_validate_cli_on_parquet(tmp_path, capsys, embedded):
    parquet = write_pro(tmp_path, embedded)
    assert main(["benchmark", "validate", str(parquet), "--kind", "mmau-pro", "--check-audio"]) == 0
    out = capsys.readouterr().out
    assert "accepted=4 rejected=3" in out
    assert "instruction-following item skipped" in out and "multi-audio item skipped" in out


def test_mmau_pro_export_parquet_keeps_columns_and_refusals(tmp_path):
    entry, path = parse_benchmark(f"mmau-pro:{write_pro(tmp_path, embedded=True)}")
    bench = entry.load(path, check_audio=False)
    items = {i.id: i for i in bench.items}
    outputs = {"p-sound": "rain", "p-music": "I don't know.", "p-speech": "B", "p-spatial": "the moon"}
    records = [{**items[i].scoring_record(), "model_output": outputs[i]} for i in items]
    exported, summary = export_for_benchmark(records, entry, items=items)
    out = tmp_path / "mmau_pro_with_outputs.parquet"
    from reliable_lalm.benchmarks.official import write_parquet

    write_parquet(exported, out)
    table = pq.read_table(str(out))
    assert set(PRO_COLUMNS) | {"model_output"} <= set(table.column_names)
    got = {r["id"]: r for r in table.to_pylist()}
    assert got["p-sound"]["model_output"] == "rain"
    assert got["p-speech"]["model_output"] == "sad"  # a letter maps to its option text
    assert got["p-music"]["model_output"] == "I don't know."  # a refusal verbatim, never "IDK"
    assert got["p-spatial"]["model_output"] == "the moon"  # unmapped: the model's own text
    assert summary["verbatim_outputs"] == 2
    assert got["p-music"]["reasoning_skills"] == ["comparison", "counting"]
    assert got["p-music"]["audio_path"] == ["data/p-music.wav"]


# ------------------------------------------------------------------------------------------------
# MMSU as a save_to_disk folder, MMAU as a Hub-style folder and hf:<repo> from the cache
# ------------------------------------------------------------------------------------------------

def mmsu_rows():
    return [{"id": f"mmsu-{n}", "audio": {"bytes": wav_bytes(100 + n), "path": f"mmsu-{n}.wav"},
             "task_name": "emotion_recognition", "question": "Which emotion?", "choice_a": "happy",
             "choice_b": "sad", "choice_c": "angry", "choice_d": None, "answer_gt": "sad",
             "category": "perception", "sub-category": "paralinguistics", "sub-sub-category": "speaker traits",
             "linguistics_sub_discipline": None} for n in range(3)]


def test_mmsu_save_to_disk_folder_with_audio_feature(tmp_path, cache_dir):
    ds = datasets.Dataset.from_list(mmsu_rows())
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=SR))  # as the Hub copy declares it
    folder = tmp_path / "mmsu_disk"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(folder))
    before = files_under(folder)
    bench = load(f"mmsu:{folder}")
    assert files_under(folder) == before
    assert [i.id for i in bench.items] == ["mmsu-0", "mmsu-1", "mmsu-2"] and not bench.rejected
    assert bench.items[0].choices == ("happy", "sad", "angry")
    assert Path(bench.items[1].audio_path).read_bytes() == wav_bytes(101)
    assert bench.items[1].record["audio"] == "mmsu-1.wav"
    with pytest.raises(ValueError, match="no split 'dev'"):
        load(f"mmsu:{folder}:dev")


def mmau_rows():
    return [{"id": f"mmau-{n}", "audio_id": f"./test-mini-audios/mmau-{n}.wav",
             "audio": {"bytes": wav_bytes(200 + n), "path": f"mmau-{n}.wav"}, "question": "What is heard?",
             "choices": ["a bell", "a drum", "a flute"], "answer": "a drum", "task": "sound",
             "category": "Sound Event", "sub-category": "identification", "difficulty": "easy",
             "dataset": "x", "split": "test-mini"} for n in range(3)]


def write_hub_layout(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(mmau_rows()), str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_mmau_parquet_folder_embedded_audio_wins_over_audio_id(tmp_path):
    folder = write_hub_layout(tmp_path / "mmau")
    bench = load(f"mmau-test-mini:{folder}", check_audio=True)
    assert [i.id for i in bench.items] == ["mmau-0", "mmau-1", "mmau-2"] and not bench.rejected
    assert Path(bench.items[2].audio_path).read_bytes() == wav_bytes(202)
    assert bench.items[2].record["audio_id"] == "./test-mini-audios/mmau-2.wav"  # the record as released


def test_mmau_test_split_parquet_without_answers(tmp_path):
    rows = [{**r, "answer": None} for r in mmau_rows()]
    parquet = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(parquet))
    bench = load(f"mmau-test:{parquet}")
    assert [i.answer for i in bench.items] == ["", "", ""] and not bench.rejected
    assert load(f"mmau-test-mini:{parquet}").rejected[0].cause.startswith("answer None is not among the choices")


def test_hf_spec_reads_the_local_hub_cache_offline(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    repo_dir = hub / "datasets--someone--mmau-copy"
    commit = "0123456789abcdef0123456789abcdef01234567"
    write_hub_layout(repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = load("hf:someone/mmau-copy")  # a bare hf: spec is of the generic MMAU schema
    assert bench.kind == "mmau" and len(bench.items) == 3
    assert load("mmau-test-mini:hf:someone/mmau-copy:test").items == bench.items
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load("hf:someone/absent")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load("hf:someone/mmau-copy:validation")


def test_unreadable_parquet_is_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    assert main(["benchmark", "validate", str(bad), "--kind", "mmau-pro"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlalm benchmark validate: error:") and "broken.parquet" in err and "\n" not in err


# ------------------------------------------------------------------------------------------------
# The shared MMAU and MMAR metadata, as parquet, load exactly as their JSON does
# ------------------------------------------------------------------------------------------------

SHARED = [("mmau-test-mini", paths.SHARED_DIR / "mmau" / "mmau-test-mini.2025-03-25.json"),
          ("mmau-test-mini", paths.SHARED_DIR / "mmau" / "mmau-test-mini.v05.15.25.json"),
          ("mmar", paths.SHARED_DIR / "mmar" / "MMAR-meta.jsonl")]


def read_json_or_jsonl(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


def as_parquet_rows(records: list[dict]) -> list[dict]:
    """The records as a parquet column can hold them: every column in every row (absent -> null),
    and MMAU's ``category`` (a string, a list in a few records) as a list everywhere."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    mixed = {k for k in columns if len({type(r[k]) for r in records if r.get(k) is not None}) > 1}
    assert mixed <= {"category"}, mixed
    return [{k: ([r[k]] if k in mixed and isinstance(r.get(k), str) else r.get(k)) for k in columns} for r in records]


@pytest.mark.parametrize("kind,source", SHARED, ids=[p.name for _, p in SHARED])
def test_shared_metadata_as_parquet_loads_as_the_json(kind, source, tmp_path):
    if not source.is_file():
        pytest.skip(f"{source} not available (../shared)")
    rows = as_parquet_rows(read_json_or_jsonl(source))
    parquet = tmp_path / "meta.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(parquet))
    audio_dir = str(tmp_path / "audio")
    from_json = load(f"{kind}:{source}", audio_dir, check_audio=False)
    from_parquet = load(f"{kind}:{parquet}", audio_dir, check_audio=False)
    assert len(from_json.items) > 900
    assert from_parquet.items == from_json.items  # ids, audio paths, texts, choices, answers, groups, notes
    assert [(r.index, r.item_id, r.cause) for r in from_parquet.rejected] == \
        [(r.index, r.item_id, r.cause) for r in from_json.rejected]
    assert from_parquet.modalities == from_json.modalities
    row_of = {r["id"]: r for r in rows}
    assert [i.record for i in from_parquet.items] == [row_of[i.id] for i in from_json.items]
