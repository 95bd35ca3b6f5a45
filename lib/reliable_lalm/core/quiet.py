"""Library warnings that tell a reader of our outputs nothing, silenced narrowly.

Each entry is one warning, matched by category and the start of its message, that the user cannot
act on (a library calling another's deprecated API). Every other warning still shows, and the
library's own (``WARNING (rlalm): ...``) are never filtered. :func:`silence_known_warnings` is
called by ``rlalm`` and by every notebook's setup cell.
"""
from __future__ import annotations

import warnings

# (category, regular expression matched against the start of the message, why it is harmless)
KNOWN_NOISY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "peft reads transformers 5's deprecated attribute once per model it wraps or loads"),
)


def silence_known_warnings() -> None:
    """Ignore :data:`KNOWN_NOISY_WARNINGS` in this process (idempotent)."""
    for category, message, _why in KNOWN_NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
