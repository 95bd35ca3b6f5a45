"""``rlalm models``: the registered models; ``--check`` runs a tiny random instance of each native family.

    rlalm models            # name, backend, family, paper label, status (weights local / cached / not here)
    rlalm models --check    # per model: builds a tiny random-weight instance of its family offline and
                            # answers one synthetic question with the baseline and the IDK prompt

``--check`` prints one line per native model, ``ok`` or the reason, and exits 0 only if every native
model is ok. A family whose optional packages are not installed is reported as ``skipped (needs
...)`` and is **not** ok (exit status 1): the check says what was verified, and an unverified family
was not. Entries whose family has no tiny builder (the Qwen2-Audio engine, the demo, workers) are
listed with ``-`` in the check (their own test suite covers them).
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from reliable_lalm.core.items import SAMPLING_RATE
from reliable_lalm.core.plugins import load_object
from reliable_lalm.core.prompts import baseline_prompt, idk_prompt
from reliable_lalm.models.base import GenerationRequest, GenerationSettings
from reliable_lalm.models.families import FAMILIES, families_by_model_type
from reliable_lalm.models.native_tiny import tiny_specs
from reliable_lalm.models.registry import _config_of, registered_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="build a tiny random instance of each native family and answer one question")


def _status(entry) -> str:
    if entry.built_on_first_use:  # listing never builds a checkpoint
        return f"built on first use ({entry.source!r})"
    try:
        source = entry.resolve_source()
    except Exception as err:  # noqa: BLE001 - a source function that fails is a status, not a crash
        return f"source unavailable ({err})"
    missing = [r for r in entry.extra_requirements if importlib.util.find_spec(r) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if entry.family == "worker":
        return "worker configured (not started)"
    if Path(source).expanduser().is_dir():
        return "local"
    return "cached" if _config_of(source) is not None else "not downloaded"


def _family_of(entry) -> str | None:
    """The family of an entry that has a tiny instance to check (None for the others)."""
    family = FAMILIES.get(entry.family) or families_by_model_type().get(entry.family)
    if family is None or entry.backend != family.backend or not family.tiny:
        return None
    return family.name


def synthetic_question():
    """One synthetic item: a 1.5 s two-tone clip and a four-choice sound question."""
    t = np.arange(int(1.5 * SAMPLING_RATE)) / float(SAMPLING_RATE)
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    return audio, "What is the primary sound source heard in the recording?", ["Dog barking", "Car horn",
                                                                               "Piano melody", "Human speech"]


def check_family(family: str) -> tuple[bool, str]:
    """Tiny instance of ``family``: baseline and IDK prompt answered through its chat template."""
    spec = tiny_specs().get(family)
    if spec is None:
        return False, f"no tiny instance for family {family!r}"
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"skipped (needs {', '.join(missing)}; not verified)"
    start = time.perf_counter()
    try:
        model, processor = spec.build(0)
        backend = load_object(FAMILIES[family].backend)(model, processor, batch_size=2)
        audio, question, choices = synthetic_question()
        settings = GenerationSettings(max_new_tokens=8)
        prompts = {"baseline": baseline_prompt(question, choices), "idk": idk_prompt(question, choices)}
        generations = backend.generate([GenerationRequest(f"check-{name}", audio, text, settings)
                                        for name, text in prompts.items()])
        for name, text in prompts.items():  # the prompt really went through the template
            if question not in backend.chat_text(text):
                return False, f"{name} prompt missing from the chat-templated text"
        if any(g.new_tokens[0] < 1 for g in generations):
            return False, "no token generated"
    except Exception as err:  # noqa: BLE001 - the reason is the check's output
        return False, f"{type(err).__name__}: {err}"
    tokens = ", ".join(f"{name} {g.new_tokens[0]} tokens" for name, g in zip(prompts, generations))
    return True, f"ok ({tokens}; {time.perf_counter() - start:.1f} s)"


def run(args: argparse.Namespace) -> int:
    entries = sorted(registered_models().values(), key=lambda e: e.name)
    if not args.check:
        rows = [("name", "backend", "family", "paper label", "status")]
        for e in entries:
            rows.append((e.name, e.backend.rsplit(":", 1)[-1], e.family or "-", e.paper_label or "-", _status(e)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return 0
    results: dict[str, tuple[bool, str]] = {}
    all_ok, native = True, 0
    for e in entries:
        family = _family_of(e)
        if family is None:
            print(f"{e.name}: - (no tiny instance to check; covered by its own tests)")
            continue
        native += 1
        if family not in results:
            results[family] = check_family(family)
        ok, message = results[family]
        all_ok &= ok
        print(f"{e.name} [{family}]: {message}", flush=True)
    if native == 0:
        print("no native model registered")
        return 1
    return 0 if all_ok else 1
