"""Writes lib/reliable_lalm/assets/tiny_audio_flamingo3_random/ (the demo's second model family, random
weights, seed 0). Run: python tools/ship_tiny_native.py"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from reliable_lalm.models.native_tiny import build_tiny, save_tiny  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "lib" / "reliable_lalm" / "assets" / "tiny_audio_flamingo3_random"
    print(save_tiny(*build_tiny("audioflamingo3", seed=0), out))
