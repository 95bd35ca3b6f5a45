"""The scoring core: benchmark items, prompts, answer normalizers, metrics, scoring, result stores.

Everything here imports without torch (``rlalm score`` and ``rlalm export`` run on a laptop with
no deep-learning stack): items and their validation (:mod:`.items`), the paper's prompt
templates (:mod:`.prompts`), rule-based and LLM answer normalization (:mod:`.normalize`,
:mod:`.llm_normalizer`), the reliability metrics (:mod:`.metrics`), scoring of prediction files
(:mod:`.scoring`), export to official scorers' formats (:mod:`.export`), content fingerprints
(:mod:`.fingerprint`) and the append-only result store (:mod:`.results`).
"""
