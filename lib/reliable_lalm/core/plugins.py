"""Lazy ``"module:attribute"`` references and entry-point discovery, shared by the registries.

Registries hold strings, not imported objects, so listing models or benchmarks imports no torch
and product code never imports the embedded demo: the demo's entries are declared in
``pyproject.toml`` under the entry-point groups ``reliable_lalm.models`` and
``reliable_lalm.benchmarks``, where a user's own package can register entries too.
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any


def load_object(ref: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, sep, attribute = ref.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"expected 'module:attribute', got {ref!r}")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def entry_point_objects(group: str) -> dict[str, Any]:
    """``name -> loaded object`` for every entry point of ``group`` (in name order)."""
    found = {}
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        found[ep.name] = ep.load()
    return found
