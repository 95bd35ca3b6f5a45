"""Peak memory of loading a 9000-item benchmark split whose audio is embedded in the parquet file.

Builds (in a temporary folder) an MMAU-schema parquet file of N rows, each with a distinct clip of
S seconds embedded as WAV bytes (an ``audio`` column, as the Hub copies of MMAU store clips), then
loads it in a fresh process through the registry (``mmau:FILE``: the clips are written once to a
content-keyed cache under the temporary folder) and prints that process's peak RSS beside the size
of the file and of the audio, and their ratio. A second load (cache already filled) is measured too.

    python tools/measure_dataset_memory.py [--rows 9000] [--seconds 2] [--format parquet|disk]

``--format disk`` converts the file to a ``save_to_disk`` folder first (read memory-mapped; the
resident size then includes mapped file pages, which the kernel can drop: they are page cache).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

SR = 16_000
ROWS_PER_GROUP = 256  # parquet row groups, as datasets' own to_parquet writes them

LOADER = """
import json, resource, sys, time
from reliable_lalm.benchmarks.registry import load
t = time.perf_counter()
bench = load("mmau:" + sys.argv[1], check_audio=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
kib = lambda key: int(status.get(key, "0 kB").split()[0])
print(json.dumps({"items": len(bench.items), "rejected": len(bench.rejected), "seconds": time.perf_counter() - t,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "rss_anon_kib": kib("RssAnon"), "rss_file_kib": kib("RssFile")}))
"""


def build(path: Path, rows: int, seconds: float) -> int:
    rng = np.random.default_rng(0)
    n = int(SR * seconds)
    writer = None
    audio_bytes = 0
    for start in range(0, rows, ROWS_PER_GROUP):
        batch = []
        for i in range(start, min(rows, start + ROWS_PER_GROUP)):
            buf = io.BytesIO()
            sf.write(buf, (0.1 * rng.standard_normal(n)).astype(np.float32), SR, format="WAV", subtype="PCM_16")
            clip = buf.getvalue()
            audio_bytes += len(clip)
            batch.append({"id": f"x{i}", "audio_id": f"./test-audios/x{i}.wav",
                          "audio": {"bytes": clip, "path": f"x{i}.wav"}, "question": "What is heard?",
                          "choices": ["a", "b", "c", "d"], "answer": "a", "task": ("sound", "music", "speech")[i % 3],
                          "category": "c", "sub-category": "s", "difficulty": "easy", "dataset": "d",
                          "split": "test"})
        table = pa.Table.from_pylist(batch)
        writer = writer or pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    writer.close()
    return audio_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=9000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--format", choices=("parquet", "disk"), default="parquet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "test.parquet"
        audio_bytes = build(parquet, args.rows, args.seconds)
        env = {**os.environ, "RLALM_CACHE_DIR": str(Path(tmp) / "cache"), "RLALM_PROGRESS": "off"}
        size = parquet.stat().st_size
        source = parquet
        if args.format == "disk":
            import datasets

            source = Path(tmp) / "disk"
            datasets.disable_progress_bars()
            datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(tmp) / "hf")).save_to_disk(str(source))
        print(f"format={args.format} rows={args.rows} clip_seconds={args.seconds:g} parquet_bytes={size} embedded_audio_bytes={audio_bytes}")
        for label in ("first load (clips written to the cache)", "second load (cache filled)"):
            out = subprocess.run([sys.executable, "-c", LOADER, str(source)], env=env, capture_output=True,
                                 text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rss = result["peak_rss_bytes"]
            print(f"{label}: items={result['items']} rejected={result['rejected']} seconds={result['seconds']:.1f} "
                  f"peak_rss_MiB={rss / 2**20:.0f} peak_rss/parquet={rss / size:.3f} at the end: "
                  f"anonymous_MiB={result['rss_anon_kib'] / 1024:.0f} file_backed_MiB={result['rss_file_kib'] / 1024:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
