"""The synthetic demo benchmark: determinism, schema, structure per modality, difficulty, caching."""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, find_peaks, sosfilt

from reliable_lalm.demo import synthetic as S
from reliable_lalm.core.items import load_audio, load_benchmark

SR = 16_000


# ----------------------------------------------------------------------------- shared data

@pytest.fixture(scope="module")
def pool() -> list[tuple[np.ndarray, dict, float]]:
    """In-memory items of every (task, type, difficulty), with the CPU time each took."""
    rng = np.random.default_rng(2024)
    out = []
    for task in S.TASKS:
        for _ in range(4):
            for qtype in S.QUESTION_TYPES[task]:
                for diff in S.DIFFICULTIES:
                    t0 = time.process_time()
                    audio, record = S.generate_item(rng, task, difficulty=diff, question_type=qtype)
                    out.append((audio, record, time.process_time() - t0))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    return S.build_benchmark(out, seed=3, n_per_task=10, split="test", progress=False)


def _band_env_db(audio: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Log energy (dB) of a band in 20 ms frames every 10 ms."""
    x = sosfilt(butter(4, [lo, hi], btype="bandpass", fs=SR, output="sos"), audio.astype(float))
    n = (len(x) - 320) // 160 + 1
    frames = x[np.arange(320)[None, :] + 160 * np.arange(n)[:, None]]
    return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)


def _count_onsets(audio: np.ndarray) -> int:
    """A hand-written event counter: jumps of >= 6 dB in the 300-4000 Hz band energy."""
    e = _band_env_db(audio, 300, 4000)
    strength = e[3:] - np.minimum.reduce([e[2:-1], e[1:-2], e[:-3]])
    peaks, _ = find_peaks(strength, height=6.0, distance=5)
    return len(peaks)


def _harmonicity(audio: np.ndarray, fmin: float, fmax: float) -> tuple[float, float]:
    """(peak normalized autocorrelation, its frequency) over the loudest 64 ms frame."""
    n = 1024
    frames = audio[: len(audio) // n * n].reshape(-1, n).astype(float)
    x = frames[np.argmax((frames ** 2).sum(axis=1))]
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[n - 1:]
    ac = ac / (ac[0] + 1e-12) / (1 - np.arange(n) / n)  # unbiased: long lags are not penalized
    # Search past the first zero crossing (short lags of a low tone correlate trivially), and take
    # the shortest lag near the best one (multiples of the period correlate as well).
    first_neg = int(np.argmax(ac < 0)) or 1
    lags = np.arange(max(int(SR / fmax), first_neg), int(SR / fmin))
    if len(lags) == 0:
        return 0.0, 0.0
    top = ac[lags].max()
    best = lags[np.argmax(ac[lags] >= 0.9 * top)]
    return float(ac[best]), SR / best


# ----------------------------------------------------------------------------- generator

def test_generate_item_is_deterministic():
    for task in S.TASKS:
        a1, r1 = S.generate_item(np.random.default_rng(7), task)
        a2, r2 = S.generate_item(np.random.default_rng(7), task)
        a3, r3 = S.generate_item(np.random.default_rng(8), task)
        assert a1.tobytes() == a2.tobytes() and r1 == r2
        assert a1.tobytes() != a3.tobytes()


# Texts and lengths of the first items of a split, per generator version. They come from the seeded
# integer/uniform draws only, so they are the same on every platform.
GOLDEN = {"2.0": "97512793c2dcf569dd83d7d9bf90838a44f6a221", "3.0": "6a424b1f631b99e6775c487f623c218a55699b40"}


def test_generator_changes_bump_the_version():
    """Cached benchmarks are keyed on GENERATOR_VERSION: a change of output must come with a bump
    (then add the new digest here)."""
    import hashlib

    keys = ("question", "choices", "answer", "content", "reasoning", "difficulty", "sub-category")
    items = [[len(a)] + [r[k] for k in keys] for a, r in S.generate_split(0, 2, "golden")]
    digest = hashlib.sha1(json.dumps(items).encode()).hexdigest()
    assert GOLDEN.get(S.GENERATOR_VERSION) == digest, (S.GENERATOR_VERSION, digest)


def test_generate_item_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        S.generate_item(rng, "video")
    with pytest.raises(ValueError):
        S.generate_item(rng, "sound", difficulty="extreme")
    with pytest.raises(ValueError):
        S.generate_item(rng, "sound", question_type="chord quality")


def test_items_are_valid(pool):
    required = {"id", "audio_id", "question", "choices", "answer", "dataset", "task", "split", "category",
                "sub-category", "difficulty", "content", "audio_type", "reasoning"}
    for audio, r, _ in pool:
        assert required <= set(r), r
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert S.MIN_SECONDS * SR <= len(audio) <= S.MAX_SECONDS * SR
        assert np.all(np.isfinite(audio))
        assert abs(np.abs(audio).max() - 0.5) < 1e-3
        assert 2 <= len(r["choices"]) <= 4 and len(set(r["choices"])) == len(r["choices"])
        assert r["answer"] in r["choices"]
        # Every question of a type has the same number of options, all from the type's classes.
        classes = S.ANSWER_CLASSES[r["sub-category"]]
        assert len(r["choices"]) == S.n_options(classes) and set(r["choices"]) <= set(classes), r
        assert r["sub-category"] in S.QUESTION_TYPES[r["task"]]
        assert r["category"] in ("Information Extraction", "Reasoning")
        assert r["audio_type"] == {"sound": "Sound", "music": "Music", "speech": "Speech"}[r["task"]]
        assert r["dataset"] == "synthetic-v1"
        assert r["content"] and not r["content"].endswith(".")
        assert r["reasoning"].endswith(".") and ". " not in r["reasoning"]  # one sentence
        assert r["content"].isascii() and r["reasoning"].isascii() and r["question"].isascii()


def test_vocabulary_is_small_and_regular(pool):
    words = Counter()
    for _, r, _ in pool:
        for text in (r["question"], r["content"], r["reasoning"], *r["choices"]):
            words.update(re.findall(r"[a-z]+|\d+", text.lower()))
    assert len(words) < 350, sorted(words)


def test_generation_is_fast(pool):
    mean_ms = 1000 * np.mean([t for *_, t in pool])
    # CPU time (not wall time) so that other jobs on a shared machine do not make this flaky.
    assert mean_ms < 20, f"{mean_ms:.1f} ms per item"


def test_answer_positions_and_labels_are_balanced():
    rng = np.random.default_rng(5)
    positions = Counter()
    for _ in range(4000):
        choices = S._choices(rng, "b", ["a", "b", "c", "d", "e"])
        assert len(choices) == 4 and "b" in choices
        positions[choices.index("b")] += 1
    assert max(positions.values()) / 4000 < 0.3  # 0.25 expected
    # Distractors are uniform over the other classes.
    offered = Counter(c for _ in range(2000) for c in S._choices(rng, "b", ["a", "b", "c", "d", "e"]) if c != "b")
    assert max(offered.values()) / min(offered.values()) < 1.15, offered


def test_a_split_deals_answers_and_positions_evenly():
    """In a split, within each question type, every answer class and every option position is
    correct equally often (within one), so no rule that ignores the audio beats chance by more
    than that rounding; MMAU's "Most Frequent Choice" oracle, fitted on the split itself, included."""
    from reliable_lalm.core.items import BenchmarkItem
    from reliable_lalm.core.scoring import score_reference_baselines

    records = [r for _, r in S.generate_split(11, 90, "balance")]
    for task in S.TASKS:
        for qtype in S.BENCHMARK_QUESTION_TYPES[task]:
            rs = [r for r in records if r["sub-category"] == qtype]
            answers = Counter(r["answer"] for r in rs)
            positions = Counter(r["choices"].index(r["answer"]) for r in rs)
            assert set(answers) == set(S.ANSWER_CLASSES[qtype]), (qtype, answers)
            assert max(answers.values()) - min(answers.values()) <= 1, (qtype, answers)
            assert len(positions) == S.n_options(S.ANSWER_CLASSES[qtype])
            assert max(positions.values()) - min(positions.values()) <= 1, (qtype, positions)
    items = [BenchmarkItem(id=r["id"], question=r["question"], choices=tuple(r["choices"]), answer=r["answer"],
                           task=r["task"], audio_path="") for r in records]
    chance = np.mean([1 / len(it.choices) for it in items])
    frequent = score_reference_baselines(items)["Most Frequent Choice"]["acc"]
    assert frequent < chance + 0.03, (frequent, chance)


def test_answer_position_balance_on_items():
    rng = np.random.default_rng(17)
    many = {"sound": ["event identification", "event counting"], "music": ["instrument identification", "interval size"],
            "speech": ["syllable counting", "vowel identification"]}  # the types with 4 options
    positions = Counter()
    for i in range(150):
        task = S.TASKS[i % 3]
        _, r = S.generate_item(rng, task, question_type=many[task][i % 2])
        assert len(r["choices"]) == 4
        positions[r["choices"].index(r["answer"])] += 1
    assert sum(positions.values()) == 150
    assert max(positions.values()) / sum(positions.values()) <= 0.45, positions


def test_majority_answer_baseline_is_far_from_perfect(pool):
    # "Most frequent answer text per question type", fitted on half of the items, scored on the rest.
    train, test = pool[::2], pool[1::2]
    freq: dict[str, Counter] = defaultdict(Counter)
    for _, r, _ in train:
        freq[r["sub-category"]][r["answer"]] += 1
    correct = []
    for _, r, _ in test:
        ranked = [a for a, _ in freq[r["sub-category"]].most_common()]
        guess = next((a for a in ranked if a in r["choices"]), r["choices"][0])
        correct.append(guess == r["answer"])
    # Answers are uniform within a type: this rule is at chance (about 1/3 here), not above it.
    chance = np.mean([1 / len(r["choices"]) for _, r, _ in test])
    assert np.mean(correct) < chance + 0.1, (np.mean(correct), chance)


# ----------------------------------------------------------------------------- structure per modality

def _select(pool, task, diff=None, types=None):
    return [(a, r) for a, r, _ in pool if r["task"] == task and (diff is None or r["difficulty"] == diff)
            and (types is None or r["sub-category"] in types)]


def test_speech_has_voice_pitch_and_formant_band_energy(pool):
    items = _select(pool, "speech", "easy")
    for audio, r in items:
        spec = np.abs(np.fft.rfft(audio.astype(float))) ** 2
        f = np.fft.rfftfreq(len(audio), 1 / SR)
        # A voice: energy in the f0 and formant bands, little above 4 kHz.
        assert spec[(f >= 80) & (f <= 4000)].sum() / spec.sum() > 0.85, r["content"]
    pitched = _select(pool, "speech", "easy", {"speaker identification", "vowel identification"})
    f0s = [_harmonicity(a, 70, 500) for a, _ in pitched]
    assert np.median([h for h, _ in f0s]) > 0.6
    assert all(80 <= f0 <= 420 for h, f0 in f0s if h > 0.6)


def test_music_has_clear_harmonic_pitch(pool):
    items = _select(pool, "music", "easy", {"instrument identification", "pitch register", "interval direction"})
    harm = [_harmonicity(a, 60, 1000)[0] for a, _ in items]
    assert np.median(harm) > 0.8
    textures = [(a, r) for a, r in _select(pool, "sound", None, {"event identification"})
                if r["answer"] in ("rain", "wind") and r["difficulty"] != "hard"]
    if textures:  # noise-like sounds are not periodic
        assert np.median([_harmonicity(a, 60, 1000)[0] for a, _ in textures]) < np.median(harm) - 0.2


def test_sound_is_less_periodic_than_music_and_speech(pool):
    # Knocks, rain, wind and bells are noise bursts or inharmonic; notes and voices are periodic.
    harm = {t: np.median([_harmonicity(a, 60, 1000)[0] for a, _ in _select(pool, t, "easy")]) for t in S.TASKS}
    assert harm["sound"] < harm["music"] - 0.1 and harm["sound"] < harm["speech"] - 0.1, harm


def test_register_follows_the_pitch(pool):
    checked = 0
    for audio, r in _select(pool, "music", "easy", {"pitch register"}):
        h, f0 = _harmonicity(audio, 50, 1500)
        assert h > 0.7, r["content"]
        assert {"low": f0 < 130, "middle": 200 < f0 < 400, "high": f0 > 700}[r["answer"]], (r["content"], f0)
        checked += 1
    assert checked >= 4


# ----------------------------------------------------------------------------- difficulty

def test_difficulty_mix(pool, built):
    for task in S.TASKS:
        counts = Counter(r["difficulty"] for _, r in _select(pool, task))
        assert set(counts) == set(S.DIFFICULTIES)
    records = json.loads(built.read_text())
    for task in S.TASKS:
        for key, labels in (("difficulty", S.DIFFICULTIES), ("sub-category", S.BENCHMARK_QUESTION_TYPES[task])):
            counts = Counter(r[key] for r in records if r["task"] == task)
            assert set(counts) == set(labels) and max(counts.values()) - min(counts.values()) <= 1, counts


def test_onset_counter_succeeds_on_easy_and_fails_on_hard_counting():
    """A hand-written classifier shows that difficulty works: counting is easy when events are
    spaced and loud, and near chance when they are close, uneven and buried in noise."""
    rng = np.random.default_rng(99)
    acc, chance = {}, {}
    for diff in ("easy", "hard"):
        hits, ch = [], []
        for _ in range(30):
            audio, r = S.generate_item(rng, "sound", difficulty=diff, question_type="event counting")
            hits.append(str(_count_onsets(audio)) == r["answer"])
            ch.append(1 / len(r["choices"]))
        acc[diff], chance[diff] = np.mean(hits), np.mean(ch)
    assert acc["easy"] >= 0.75 and acc["easy"] > chance["easy"] + 0.35, acc
    assert acc["hard"] <= acc["easy"] - 0.3, acc


def test_voice_pitch_tells_speakers_apart_only_when_easy():
    rng = np.random.default_rng(5)
    acc = {}
    for diff in ("easy", "hard"):
        hits = []
        for _ in range(24):
            audio, r = S.generate_item(rng, "speech", difficulty=diff, question_type="speaker identification")
            h, f0 = _harmonicity(audio, 70, 500)
            guess = "man" if f0 < 160 else "woman" if f0 < 255 else "child"
            hits.append(guess == r["answer"])
        acc[diff] = np.mean(hits)
    assert acc["easy"] >= 0.8 and acc["hard"] <= acc["easy"] - 0.25, acc


# ----------------------------------------------------------------------------- benchmark files

def test_benchmark_loads_without_rejections(built):
    bench = load_benchmark(built)
    assert len(bench) == 30 and not bench.rejected
    assert {i.task for i in bench.items} == set(S.TASKS)
    for item in bench.items:
        assert re.fullmatch(r"syn-test-(sound|music|speech)-\d{4}", item.id)
        assert item.record["audio_id"] == f"./audio/test/{item.id}.wav"
        info = sf.info(item.audio_path)
        assert info.samplerate == SR and info.channels == 1
        assert S.MIN_SECONDS <= info.duration <= S.MAX_SECONDS
        audio = load_audio(item.audio_path)
        assert np.all(np.isfinite(audio)) and abs(np.abs(audio).max() - 0.5) < 2e-3
    assert sorted(i.id for i in bench.items)[0] == "syn-test-music-0001"


def test_build_is_deterministic(built, tmp_path):
    again = S.build_benchmark(tmp_path / "b", seed=3, n_per_task=10, split="test", progress=False)
    assert again.read_bytes() == built.read_bytes()
    for wav in sorted((built.parent / "audio" / "test").glob("*.wav"))[:6]:
        assert wav.read_bytes() == (tmp_path / "b" / "audio" / "test" / wav.name).read_bytes()
    other = S.build_benchmark(tmp_path / "c", seed=4, n_per_task=10, split="test", progress=False)
    assert other.read_bytes() != built.read_bytes()


def test_items_do_not_depend_on_benchmark_size(built, tmp_path):
    small = json.loads(S.build_benchmark(tmp_path, seed=3, n_per_task=3, split="test", progress=False).read_text())
    big = {r["id"]: r for r in json.loads(built.read_text())}
    assert all(big[r["id"]] == r for r in small)


def test_cache_is_reused_and_invalidated(tmp_path):
    path = S.build_benchmark(tmp_path, seed=1, n_per_task=2, split="test", progress=False)
    files = [path, tmp_path / "test.meta.json", *sorted((tmp_path / "audio" / "test").glob("*.wav"))]
    before = {f: f.stat().st_mtime_ns for f in files}
    time.sleep(0.01)
    assert S.build_benchmark(tmp_path, seed=1, n_per_task=2, split="test", progress=False) == path
    assert {f: f.stat().st_mtime_ns for f in files} == before
    S.build_benchmark(tmp_path, seed=1, n_per_task=3, split="test", progress=False)  # other size: rebuilt
    assert len(json.loads(path.read_text())) == 9
    assert path.stat().st_mtime_ns != before[path]
    meta = S.read_meta(tmp_path, "test")
    meta["generator_version"] = "0.0"  # an older generator: rebuilt
    (tmp_path / "test.meta.json").write_text(json.dumps(meta))
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    S.build_benchmark(tmp_path, seed=1, n_per_task=3, split="test", progress=False)
    assert path.stat().st_mtime_ns != mtime and S.read_meta(tmp_path, "test")["generator_version"] == S.GENERATOR_VERSION


def test_crashed_build_never_looks_complete(tmp_path, monkeypatch):
    good = S.build_benchmark(tmp_path, seed=1, n_per_task=2, split="test", progress=False)
    content = good.read_bytes()
    calls = {"n": 0}
    real = S.generate_item

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt  # the user pressing Ctrl-C halfway
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "generate_item", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.build_benchmark(tmp_path, seed=2, n_per_task=2, split="test", progress=False)
    monkeypatch.setattr(S, "generate_item", real)
    # The previous complete benchmark is untouched and still recognised; no temp folder is left.
    assert good.read_bytes() == content and S.read_meta(tmp_path, "test")["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert not S._is_built(tmp_path, 2, 2, "test")
    assert len(load_benchmark(good)) == 6 and not load_benchmark(good).rejected


def test_default_benchmark_splits_are_disjoint(tmp_path, monkeypatch):
    import reliable_lalm.paths as paths

    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    test = S.default_benchmark("test", n_per_task=4)
    train = S.default_benchmark("train", n_per_task=4)
    assert test == tmp_path / "synthetic" / "test.json" and train.parent == test.parent
    assert S.read_meta(test.parent, "test")["seed"] == 1234 and S.read_meta(test.parent, "train")["seed"] == 5678
    ids = {r["id"] for r in json.loads(test.read_text())} | {r["id"] for r in json.loads(train.read_text())}
    assert len(ids) == 24
    S.check_disjoint(test.parent, "test", "train")
    # The check can fail: a split compared with a copy of itself.
    (test.parent / "copy.meta.json").write_text((test.parent / "test.meta.json").read_text())
    with pytest.raises(AssertionError):
        S.check_disjoint(test.parent, "test", "copy")
