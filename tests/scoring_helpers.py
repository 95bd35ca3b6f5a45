"""Scoring a result store from Python, as the tests need it (``rlalm score`` reads stores and files
through :func:`reliable_lalm.core.records.prediction_records` instead)."""
from __future__ import annotations

from typing import Any

from reliable_lalm.core.normalize_types import Normalizer
from reliable_lalm.core.records import JoinBenchmark, join_items, join_summary, records_from_store
from reliable_lalm.core.scoring import score_records


def score_store(store: Any, benchmark: JoinBenchmark = None,
                baseline: Any | None = None, normalizer: Normalizer | None = None, *,
                sample_index: int = 0, output_field: str | None = None, **kw: Any) -> dict[str, Any]:
    """Score a result store (and optionally a baseline store) on the same benchmark.

    Adds ``missing``: benchmark ids with no record in the store (not scored), and with a loaded
    benchmark ``rejected``: its records rejected at load time (a spec is loaded by
    :func:`reliable_lalm.benchmarks.registry.resolve_benchmark`).
    """
    items, rejected = join_items(benchmark)
    pred = records_from_store(store, list(items.values()) if items is not None else None,
                              sample_index=sample_index, output_field=output_field)
    base = None
    if baseline is not None:
        base = records_from_store(baseline, list(items.values()) if items is not None else None,
                                  sample_index=sample_index, output_field=output_field)
    result = score_records(pred, base, normalizer, **kw)
    if items is not None:
        result.update(join_summary(items, pred, rejected))
    return result
