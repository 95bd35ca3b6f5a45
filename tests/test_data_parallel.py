"""Data-parallel inference under existing launchers (accelerate launch, torchrun): one shard per
process from the launcher's rank, merged by the main process, equal to a single-process run (greedy
and K@N) of the shipped demo model on MMAU-Pro's parquet format with embedded audio."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from inference_fixtures import make_items  # noqa: E402

from reliable_lalm import paths  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402
from reliable_lalm.methods.data_parallel import LaunchedProcess, launched_process, process_device, process_shard  # noqa: E402
from reliable_lalm.methods.shards import Shard  # noqa: E402


def test_launched_process_from_the_launcher_variables():
    assert launched_process({}) is None
    assert launched_process({"WORLD_SIZE": "1", "RANK": "0"}) is None  # one process: not data-parallel
    assert launched_process({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == LaunchedProcess(3, 4, 1)
    assert launched_process({"WORLD_SIZE": "2", "RANK": "1"}).local_rank == 1
    for bad in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "two", "RANK": "0"}):
        with pytest.raises(ValueError):
            launched_process(bad)


def test_process_shard_and_device():
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    assert process_shard(None, "position", env) == (Shard(1, 2, "position"), LaunchedProcess(1, 2, 1))
    assert process_shard("0/3", "hash", {}) == (Shard(0, 3), None)
    assert process_shard(None, "hash", {}) == (None, None)
    with pytest.raises(ValueError, match="drop --shard"):
        process_shard("0/2", "hash", env)
    assert process_device("cpu", LaunchedProcess(1, 2, 1)) == "cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pro_parquet(folder: Path, n: int) -> Path:
    """MMAU-Pro's columns, the audio embedded as bytes (the demo items' clips)."""
    items = make_items(folder / "clips", n, seed=5, prefix="dp")
    rows = [{"id": it.id, "audio_path": [{"bytes": Path(it.audio_path).read_bytes(), "path": f"data/{it.id}.wav"}],
             "question": it.question, "answer": it.answer, "choices": list(it.choices), "category": it.task,
             "sub-cat": "x", "length_type": "short", "perceptual_skills": ["a"], "reasoning_skills": ["b"],
             "transcription": None, "task_classification": None, "task_identifier": None, "kwargs": None}
            for it in items]
    out = folder / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(out))
    return out


@pytest.mark.slow  # five interpreter start-ups with torch: ~1-2 min on 2 busy cores
def test_launchers_run_one_shard_per_process_and_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")  # the export below loads the embedded clips
    n = 7
    parquet = write_pro_parquet(tmp_path / "bench", n)
    common = ["--model", str(paths.DEMO_MODEL_DIR), "--benchmark", f"mmau-pro:{parquet}", "--device", "cpu",
              "--batch-size", "3", "--max-new-tokens", "6", "--seed", "7", "--no-progress"]
    greedy = ["--method", "baseline"]
    k_at_n = ["--method", "idk", "--samples", "2", "--temperature", "1.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path),
           "RLALM_CACHE_DIR": str(tmp_path / "cache"), "RLALM_PROGRESS": "off"}
    bin_dir = Path(sys.executable).parent
    accelerate = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                  "-m", "reliable_lalm.cli", "infer"]
    torchrun = [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                "-m", "reliable_lalm.cli", "infer"]
    single = [sys.executable, "-m", "reliable_lalm.cli", "infer"]
    runs = {"accelerate": accelerate + common + greedy + ["--out", str(tmp_path / "dp" / "greedy")],
            "torchrun": torchrun + common + k_at_n + ["--out", str(tmp_path / "dp" / "k_at_n")]}
    procs = {name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, cmd in runs.items()}
    for name, p in procs.items():
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, f"{name}: {err[-3000:]}"
        assert '"merged"' in out  # the main process merged and said so
    for kind, method in (("greedy", greedy), ("k_at_n", k_at_n)):
        p = subprocess.run(single + common + method + ["--out", str(tmp_path / "single" / kind)], env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]

    for kind, n_samples in (("greedy", 1), ("k_at_n", 2)):
        shard_sizes = [len(ResultStore(tmp_path / "dp" / kind / "shards" / f"{i}-of-2").records()) for i in range(2)]
        assert all(shard_sizes) and sum(shard_sizes) == n * n_samples  # both processes did work
        merged, reference = ResultStore(tmp_path / "dp" / kind), ResultStore(tmp_path / "single" / kind)
        key = lambda r: (r["item_id"], r["sample_index"])  # noqa: E731
        assert len(merged.records()) == n * n_samples
        assert sorted(merged.records(), key=key) == sorted(reference.records(), key=key)
        assert merged.manifest()["params_fingerprint"] == reference.manifest()["params_fingerprint"]
        assert [m["shard"] for m in merged.manifest()["merged_from"]] == ["0-of-2", "1-of-2"]
        assert all(r["error"] is None and isinstance(r["model_output"], str) for r in merged.records())
    assert not (tmp_path / "bench" / "data").exists()  # embedded clips went to the cache only

    # the merged store exports as the parquet MMAU-Pro's scorer reads
    from reliable_lalm.cli import main

    exported = tmp_path / "test_with_outputs.parquet"
    assert main(["export", str(tmp_path / "dp" / "greedy"), "--benchmark", f"mmau-pro:{parquet}",
                 "--out", str(exported)]) == 0
    table = pq.read_table(str(exported))
    assert table.num_rows == n and "model_output" in table.column_names and "sub-cat" in table.column_names
    assert table.column("audio_path").to_pylist()[0] == ["data/dp0.wav"]
