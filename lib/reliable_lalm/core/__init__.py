"""The scoring core: benchmark items, prompts, answer normalization by rules, metrics, scoring, result stores.

Everything here imports without torch, HTTP clients, plotting or argparse (``rlalm score`` and
``rlalm export`` run on a laptop with no deep-learning stack): items and their validation
(:mod:`.items`), the paper's prompt templates (:mod:`.prompts`), rule-based answer normalization
(:mod:`.normalize`), the reliability metrics (:mod:`.metrics`), prediction records and their joins
with a benchmark (:mod:`.records`), scoring (:mod:`.scoring`, :mod:`.score_table`), export to MMAU's
format (:mod:`.export`, :mod:`.submission`), abstention and calibration maths (:mod:`.abstention`),
content fingerprints (:mod:`.fingerprint`) and the append-only result store (:mod:`.results`). The
LLM judges are :mod:`reliable_lalm.methods.llm_judge`; the commands are in :mod:`reliable_lalm.cli`.
"""
