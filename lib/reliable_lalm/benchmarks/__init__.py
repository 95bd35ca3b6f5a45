"""Benchmarks and the benchmark registry (:mod:`.registry`).

A benchmark is one module with a loader (file -> :class:`~reliable_lalm.core.items.LoadedBenchmark`,
every record accepted or rejected with a reason) plus one registry entry declaring its modality
set, the field its official scorer reads the model's answer from, and whether the paper's
reference tables apply to it. MMAU test-mini lives in :mod:`.mmau`; the synthetic demo benchmark
is registered by the embedded demo package through an entry point.
"""
