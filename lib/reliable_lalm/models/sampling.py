"""The one next-token rule of every in-process engine: argmax, or seeded inverse-CDF sampling.

A sampled row draws its uniforms from its own generator seeded by (run seed, item id, sample index)
(:func:`row_uniforms`, :func:`~reliable_lalm.models.base._row_seed`), so a sample does not depend on
its batch, on the other samples requested with it, or on resuming; both engines (:mod:`.qwen2_audio`'s decoding loop and :mod:`.hf_generic`'s
logits processor) call :func:`choose_tokens` with those draws.
"""
from __future__ import annotations

from typing import Sequence

import torch

from reliable_lalm.models.base import GenerationSettings, _row_seed


def row_uniforms(seed: int, rows: Sequence[tuple[str, int]], steps: int):
    """``(len(rows), steps)`` float64 uniforms: row ``(item id, sample index)``'s draw per new token."""
    return torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(_row_seed(seed, item_id, sample)),
                                   dtype=torch.float64) for item_id, sample in rows])


def choose_tokens(logits, settings: GenerationSettings, uniforms):
    """Next token per row: argmax, or inverse-CDF sampling with each row's own uniform draw.

    Temperature, then top-k, then top-p (the top token always stays), then the first token whose
    cumulative mass exceeds ``u`` times the total. Scores are taken in float32 whatever the model's
    dtype, the cumulative mass in float64.
    """
    if settings.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    if settings.top_k and settings.top_k < sorted_scores.shape[-1]:
        sorted_scores[:, settings.top_k:] = float("-inf")
    probs = sorted_scores.softmax(dim=-1)
    if settings.top_p < 1.0:
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above
        probs = probs.masked_fill(before >= settings.top_p, 0.0)  # the top token always stays
    cdf = probs.double().cumsum(dim=-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(1, pick).squeeze(1)
