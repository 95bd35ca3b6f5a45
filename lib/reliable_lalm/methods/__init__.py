"""Prompting methods (baseline, IDK, MCoT, the 3-step task agent, K@N sampling) and their resumable runners.

Methods are registered by name in :mod:`.registry`; :mod:`.runners` runs one over a benchmark's
items into a result store, a batch at a time, resumable after a crash.
"""
