"""argparse types for numbers, checked where they are parsed: a value out of range (or not finite:
``nan``, ``inf``) stops the command in one line before anything is loaded. Shared by the commands
under :mod:`reliable_lalm.cli`."""
from __future__ import annotations

import argparse
import math
from typing import Callable

# K@N needs a handful of samples (the paper: 5); one item's samples are decoded together from one
# prefill, so this bound also bounds one batch.
MAX_SAMPLES = 100


def real(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in ``[low, high]`` (``low_open``/``high_open``: that end excluded)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {shown}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number in {shown}, got {text!r}")
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be in {shown}, got {value:g}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to at most {high}, got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


# The decoding options every command takes alike.
TEMPERATURE = real(0.0, 100.0)
TOP_P = real(0.0, 1.0, low_open=True)
REPETITION_PENALTY = real(0.0, 100.0, low_open=True)
SAMPLES = int_in(1, MAX_SAMPLES)
