"""MMAU test-mini with stand-in audio: the real metadata, a handful of items per modality.

The benchmark registry's ``mmau-test-mini-standin`` (the paper-dryrun profile's benchmark) is the
``mmau-test-mini`` loader, set beside the paper's numbers like it, on a file this module writes
under ``paths.CACHE_DIR/standin/``: the first :data:`ITEMS_PER_MODALITY` records of each modality
of the real MMAU test-mini metadata (read from ``paths.SHARED_DIR/mmau/``, never copied into the
repository), their questions, choices, answers and categories unchanged, each with a generated
16 kHz mono WAV instead of its recording (MMAU's audio cannot be downloaded here). The clips are
10 s (MMAU's usual length) of seeded tones and noise; the first sound item's is 31 s, longer
than the model's 30 s window, so the truncation path runs too. Deterministic: the same metadata
gives the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from reliable_lalm import paths
from reliable_lalm.core.items import SAMPLING_RATE

METADATA_FILE = "mmau-test-mini.2025-03-25.json"  # the release that matches the paper's baselines
ITEMS_PER_MODALITY = 4
STANDIN_VERSION = 1  # bump when the generated audio or the selection changes
CLIP_SECONDS = 10.0
LONG_CLIP_SECONDS = 31.0  # one clip past the 30 s window
MODALITIES = ("sound", "music", "speech")


class StandinMetadataMissing(FileNotFoundError):
    """The MMAU metadata is not in the shared folder (``../shared/mmau/`` beside the checkout)."""


def metadata_path() -> Path:
    return paths.SHARED_DIR / "mmau" / METADATA_FILE


def standin_dir(per_modality: int = ITEMS_PER_MODALITY) -> Path:
    return paths.CACHE_DIR / "standin" / f"mmau-test-mini-2025-03-25-{per_modality}pt-v{STANDIN_VERSION}"


def _clip(item_id: str, seconds: float) -> np.ndarray:
    """Seeded tones (a chord whose notes the id chooses) over low noise, with a fade in and out."""
    seed = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    freqs = rng.uniform(110.0, 880.0, size=3)
    wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) / 3.0
    wave = 0.3 * wave + 0.05 * rng.standard_normal(t.shape)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (wave * fade).astype(np.float32)


def select_records(records: list[dict], per_modality: int = ITEMS_PER_MODALITY) -> list[dict]:
    """The first ``per_modality`` records of each modality, in the file's order."""
    kept, counts = [], dict.fromkeys(MODALITIES, 0)
    for record in records:
        task = record.get("task")
        if task in counts and counts[task] < per_modality:
            counts[task] += 1
            kept.append(record)
    return kept


def generate(per_modality: int = ITEMS_PER_MODALITY) -> Path:
    """Write (once) the stand-in metadata JSON and its audio; returns the JSON's path."""
    out = standin_dir(per_modality)
    target = out / "mmau-test-mini.json"
    if target.is_file():
        return target
    source = metadata_path()
    if not source.is_file():
        raise StandinMetadataMissing(f"the MMAU test-mini metadata is not at {source} (set RLALM_SHARED_DIR to the "
                                     f"folder holding mmau/{METADATA_FILE})")
    records = select_records(json.loads(source.read_text(encoding="utf-8")), per_modality)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    written, long_done = [], False
    for record in records:
        seconds = CLIP_SECONDS
        if record["task"] == "sound" and not long_done:
            seconds, long_done = LONG_CLIP_SECONDS, True
        name = f"audio/{record['id']}.wav"
        sf.write(str(out / name), _clip(record["id"], seconds), SAMPLING_RATE, subtype="PCM_16")
        written.append({**record, "audio_id": name, "standin_audio": f"generated, {seconds:g} s"})
    fd, tmp = tempfile.mkstemp(prefix=".mmau-", suffix=".json", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(written, fh, indent=1, ensure_ascii=False)
    os.replace(tmp, target)
    return target


def default_path() -> str:
    return str(generate())
