"""Audio-reliance controls: the same questions with the audio replaced, for any benchmark.

Beyond the paper. A model that answers correctly without listening exploits text shortcuts
(DCASE 2026's audio QA task reports above-chance accuracy with silent audio; AudioMCQ,
arXiv 2509.21060, filters questions by how much the audio contributes). For a reliability study
the right answer to a question about a silent clip is "I don't know". Each control keeps the
question, the options and the answer and replaces the audio, clip by clip:

* ``"silence"`` — zeros, as long as the clip;
* ``"white-noise"`` — Gaussian white noise as long as the clip, scaled so that its RMS equals
  the clip's RMS exactly (a silent clip gives silence). The noise of an item is drawn from a
  generator seeded by the SHA-256 of ``"<seed>:white-noise:<item id>"``: the same bytes on every
  run and machine, independent of item order.

Audio is removed altogether (text-only) only where a backend accepts a request without audio;
none of this package's backends does, so that control is not built here.

The derived clips are mono 32-bit float WAV at the model's sampling rate, written once into a
folder the caller names (a cache folder, never beside the user's audio), named by the SHA-256 of
the source clip's bytes, the control and the seed; an existing file is reused. Derived ids are
``<id>::<control>``; everything else of the item is unchanged, so the variants run through the
usual engine, normalizer and scoring. A clip that cannot be read is skipped with its cause.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from reliable_lalm.core.atomic import atomic_write_bytes
from reliable_lalm.core.fingerprint import audio_fingerprint
from reliable_lalm.core.items import SAMPLING_RATE, BenchmarkItem, ItemError, load_audio

SILENCE, WHITE_NOISE = "silence", "white-noise"
CONTROLS: tuple[str, ...] = (SILENCE, WHITE_NOISE)


def control_id(item_id: str, control: str) -> str:
    return f"{item_id}::{control}"


def _seed_of(seed: int, control: str, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{control}:{item_id}".encode()).digest()[:8], "little")


def control_audio(audio: np.ndarray, control: str, *, seed: int = 0, item_id: str = "") -> np.ndarray:
    """The control's replacement for ``audio`` (mono float): same length; silence, or white noise
    with the clip's RMS (see the module docstring)."""
    audio = np.asarray(audio, dtype=np.float64)
    if control == SILENCE:
        return np.zeros(len(audio), dtype=np.float32)
    if control == WHITE_NOISE:
        rms = float(np.sqrt(np.mean(audio ** 2))) if len(audio) else 0.0
        noise = np.random.default_rng(_seed_of(seed, control, item_id)).standard_normal(len(audio))
        noise_rms = float(np.sqrt(np.mean(noise ** 2))) if len(noise) else 0.0
        scaled = noise * (rms / noise_rms) if noise_rms > 0 else noise * 0.0
        return scaled.astype(np.float32)
    raise ValueError(f"unknown audio control {control!r}; expected one of {CONTROLS}")


def float_wav_bytes(audio: np.ndarray, sampling_rate: int) -> bytes:
    """A mono 32-bit float WAV file (WAVE_FORMAT_IEEE_FLOAT, with its ``fact`` chunk) as bytes.

    Written here rather than by libsndfile, whose float WAVs carry a PEAK chunk with a timestamp:
    the same clip would give other bytes on every run, and the clip's content hash keys the results.
    """
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sampling_rate, sampling_rate * 4, 4, 32, 0)
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, len(audio))
              + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@dataclass
class AudioControlSet:
    """Control variants of a benchmark's items: ``items[control]`` in source order, and the items
    skipped (``skipped[item id] = cause``)."""

    items: dict[str, list[BenchmarkItem]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def build_audio_controls(items: Sequence[BenchmarkItem], directory: str | Path, *,
                         controls: Sequence[str] = CONTROLS, seed: int = 0,
                         sampling_rate: int = SAMPLING_RATE) -> AudioControlSet:
    """Write (or reuse) each item's control clips under ``directory/<control>/`` and return the
    derived items. Deterministic (module docstring); reads each source clip once."""
    for c in controls:
        if c not in CONTROLS:
            raise ValueError(f"unknown audio control {c!r}; expected one of {CONTROLS}")
    directory = Path(directory)
    out = AudioControlSet({c: [] for c in controls})
    for item in items:
        source = audio_fingerprint(item.audio_path)
        paths = {c: directory / c / f"{hashlib.sha256(f'{source}:{c}:{seed}:{sampling_rate}:{item.id}'.encode()).hexdigest()[:24]}.wav"
                 for c in controls}
        if any(not p.is_file() for p in paths.values()):
            try:
                audio = load_audio(item.audio_path, sampling_rate=sampling_rate, item_id=item.id)
            except ItemError as err:
                out.skipped[item.id] = err.cause
                continue
            for c, path in paths.items():
                if not path.is_file():
                    atomic_write_bytes(path, float_wav_bytes(control_audio(audio, c, seed=seed, item_id=item.id),
                                                             sampling_rate))
        for c, path in paths.items():
            out.items[c].append(replace(item, id=control_id(item.id, c), audio_path=str(path),
                                        record=_derived_record(item, c),
                                        notes=item.notes + (f"audio control: {c}",)))
    return out


def _derived_record(item: BenchmarkItem, control: str) -> dict:
    """The original record with the derived id; ``audio_id`` dropped (``audio_path`` is authoritative)."""
    if not item.record:
        return {}
    return {**{k: v for k, v in item.record.items() if k != "audio_id"}, "id": control_id(item.id, control)}
