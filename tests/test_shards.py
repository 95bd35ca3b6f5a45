"""Multi-process inference: shard selection, the merge's checks, and 2 CPU processes whose merged
stores equal a single-process run (greedy and K@N) of the shipped demo model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from inference_fixtures import make_items, write_benchmark_json  # noqa: E402

from reliable_lalm import paths  # noqa: E402
from reliable_lalm.core.items import BenchmarkItem  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402
from reliable_lalm.methods.shards import (Shard, ShardError, mark_shard, merge_shards, select_shard,  # noqa: E402
                                          shard_of, shard_store_dir)


def fake_items(n: int) -> list[BenchmarkItem]:
    return [BenchmarkItem(id=f"item-{i}", audio_path=f"/nowhere/{i}.wav", question="q", choices=("a", "b"),
                          answer="a", task="sound") for i in range(n)]


@pytest.mark.parametrize("by", ["hash", "position"])
def test_shards_partition_the_items_deterministically(by):
    items = fake_items(50)
    parts = [select_shard(items, Shard(i, 3, by)) for i in range(3)]
    ids = [it.id for part in parts for it in part]
    assert sorted(ids) == sorted(it.id for it in items) and len(ids) == len(set(ids))
    assert all(part for part in parts)
    assert parts == [select_shard(items, Shard(i, 3, by)) for i in range(3)]
    if by == "hash":  # independent of order and of the other items
        assert select_shard(items[::-1], Shard(1, 3)) == parts[1][::-1]
        assert select_shard(items[:10], Shard(1, 3)) == [it for it in parts[1] if it in items[:10]]
        assert shard_of("item-0", 3) == int.from_bytes(__import__("hashlib").sha256(b"item-0").digest()[:8], "big") % 3
    else:
        assert [len(p) for p in parts] == [17, 17, 16]


def test_shard_parse():
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse("0/1", "position").by == "position"
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def _fake_shard_run(out: Path, shard: Shard, items, params, *, drop: int = 0, extra_record=None) -> None:
    own = select_shard(items, shard)
    store = ResultStore.open(shard_store_dir(out, shard), params, seed=0)
    records = [{"item_id": it.id, "sample_index": 0, "model_output": f"out {it.id}", "error": None}
               for it in own[drop:]]
    store.extend(records + ([extra_record] if extra_record else []))
    mark_shard(store.directory, shard, own)


PARAMS = {"method": "baseline", "settings": {"num_samples": 1, "max_new_tokens": 4}, "model": {"backend": "X"}}


def test_merge_checks(tmp_path):
    items = fake_items(12)
    ok = tmp_path / "ok"
    for i in range(3):
        _fake_shard_run(ok, Shard(i, 3), items, PARAMS)
    summary = merge_shards(ok)
    assert summary.records == 12 and summary.shards == 3 and summary.errors == 0
    lines = (ok / "records.jsonl").read_text().splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == sorted(it.id for it in items)
    assert ResultStore(ok).manifest()["params_fingerprint"] == ResultStore.open(tmp_path / "single", PARAMS).manifest()[
        "params_fingerprint"]
    assert len(ResultStore(ok).manifest()["merged_from"]) == 3
    assert merge_shards(ok).records == 12 and (ok / "records.jsonl").read_text().splitlines() == lines  # idempotent

    missing = tmp_path / "missing"
    for i in (0, 2):
        _fake_shard_run(missing, Shard(i, 3), items, PARAMS)
    with pytest.raises(ShardError, match="1-of-3 missing"):
        merge_shards(missing)

    unfinished = tmp_path / "unfinished"
    for i in range(2):
        _fake_shard_run(unfinished, Shard(i, 2), items, PARAMS)
    manifest = shard_store_dir(unfinished, Shard(0, 2)) / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["shard"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ShardError, match="no finished run"):
        merge_shards(unfinished)

    other = tmp_path / "other"
    _fake_shard_run(other, Shard(0, 2), items, PARAMS)
    _fake_shard_run(other, Shard(1, 2), items, {**PARAMS, "settings": {"num_samples": 1, "max_new_tokens": 8}})
    with pytest.raises(ShardError, match="settings.max_new_tokens"):
        merge_shards(other)

    short = tmp_path / "short"
    _fake_shard_run(short, Shard(0, 2), items, PARAMS, drop=1)
    _fake_shard_run(short, Shard(1, 2), items, PARAMS)
    with pytest.raises(ShardError, match="incomplete"):
        merge_shards(short)
    assert merge_shards(short, allow_incomplete=True).incomplete == {"0-of-2": 1}

    stray = tmp_path / "stray"
    foreign = select_shard(items, Shard(1, 2))[0].id
    _fake_shard_run(stray, Shard(0, 2), items, PARAMS, extra_record={"item_id": foreign, "sample_index": 0})
    _fake_shard_run(stray, Shard(1, 2), items, PARAMS)
    with pytest.raises(ShardError, match="not one of its items"):
        merge_shards(stray)

    mixed = tmp_path / "mixed"
    for i in range(2):
        _fake_shard_run(mixed, Shard(i, 2), items, PARAMS)
    _fake_shard_run(mixed, Shard(0, 3), items, PARAMS)
    with pytest.raises(ShardError, match="mixes shard counts"):
        merge_shards(mixed)


SHARD_SCRIPT = textwrap.dedent("""
    import sys
    from reliable_lalm.cli import main
    common = sys.argv[1:]
    assert main(["infer", *common, "--method", "baseline", "--out", "{out}/greedy"]) == 0
    assert main(["infer", *common, "--method", "idk", "--samples", "2", "--temperature", "1.0",
                 "--out", "{out}/k_at_n"]) == 0
""")


@pytest.mark.slow  # three interpreter start-ups with torch: ~1 min on 2 busy cores
def test_two_processes_merged_equal_one_process(tmp_path):
    items = make_items(tmp_path / "audio", 7, seed=3, prefix="s")
    bench = write_benchmark_json(tmp_path / "bench.json", items)
    common = ["--model", str(paths.DEMO_MODEL_DIR), "--benchmark", str(bench), "--device", "cpu",
              "--batch-size", "3", "--max-new-tokens", "6", "--seed", "7", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def launch(out: Path, extra: list[str]) -> subprocess.Popen:
        script_path = out.with_suffix(".py")
        out.mkdir(parents=True, exist_ok=True)
        script_path.write_text(SHARD_SCRIPT.format(out=str(out)))
        return subprocess.Popen([sys.executable, str(script_path), *common, *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    sharded = tmp_path / "sharded"
    procs = [launch(sharded, ["--shard", f"{i}/2"]) for i in range(2)]  # two processes at once
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    single = launch(tmp_path / "single", [])
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err[-3000:]

    from reliable_lalm.cli import main

    for kind, n_samples in (("greedy", 1), ("k_at_n", 2)):
        shard_sizes = [len(ResultStore(sharded / kind / "shards" / f"{i}-of-2").records()) for i in range(2)]
        assert all(shard_sizes) and sum(shard_sizes) == 7 * n_samples  # both processes did work
        assert main(["merge-shards", str(sharded / kind)]) == 0
        merged, reference = ResultStore(sharded / kind), ResultStore(tmp_path / "single" / kind)
        key = lambda r: (r["item_id"], r["sample_index"])  # noqa: E731
        assert sorted(merged.records(), key=key) == sorted(reference.records(), key=key)
        assert len(merged.records()) == 7 * n_samples
        assert merged.manifest()["params_fingerprint"] == reference.manifest()["params_fingerprint"]
        assert all(r["error"] is None and isinstance(r["model_output"], str) for r in merged.records())
