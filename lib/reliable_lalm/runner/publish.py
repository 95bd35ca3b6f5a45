"""The executed notebooks of the committed profile, published where a reader sees them without
running anything: ``docs/notebooks/<profile>/<run>.ipynb`` (GitHub, nbviewer and JupyterLab render
them with their tables, figures and audio players).

``rlalm reproduce`` writes them after each successful run of a profile in
:data:`PUBLISHED_PROFILES`, and ``rlalm reproduce --check`` compares them with the committed ones
like the tables, so they are in a *stable form*: what changes between two identical runs is left
out — stderr (progress bars with their timings and rates), papermill's timing metadata, the
Python version — and the paths of this checkout, its cache and data folders are written relative
(``<repo>``, ``<cache>``, ``<data>``). Everything else (stdout, tables, figures, the item players)
is kept as executed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_text

PUBLISHED_PROFILES = ("demo",)  # the profile whose tables and figures are committed
DOCS_NOTEBOOKS = "docs/notebooks"


def published_dir(profile: str, root: str | Path | None = None) -> Path:
    return Path(root or paths.REPO_ROOT) / DOCS_NOTEBOOKS / profile


def _placeholders() -> list[tuple[str, str]]:
    """Absolute paths of this machine -> their stable names, longest first (the cache may be inside the repo)."""
    pairs = [(str(paths.CACHE_DIR.resolve()), "<cache>"), (str(paths.DATA_DIR.resolve()), "<data>"),
             (str(paths.REPO_ROOT.resolve()), "<repo>")]
    return sorted(pairs, key=lambda p: -len(p[0]))


# The default repr of an object (a pandas Styler's text/plain) carries its memory address.
_ADDRESS = re.compile(r"<([\w.]+)( object)? at 0x[0-9a-fA-F]+>")


def _relative(text: str, pairs: list[tuple[str, str]]) -> str:
    for absolute, name in pairs:
        text = text.replace(absolute, name)
    return _ADDRESS.sub(r"<\1>", text)


def _stable_value(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _relative(value, pairs)
    if isinstance(value, list):
        return [_stable_value(v, pairs) for v in value]
    if isinstance(value, dict):
        return {k: _stable_value(v, pairs) for k, v in value.items()}
    return value


def stable_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """An executed notebook without what differs between two identical runs (see the module doc)."""
    pairs = _placeholders()
    cells = []
    for cell in nb.get("cells", []):
        cell = {k: v for k, v in cell.items()}
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k not in ("papermill", "execution")}
        if "injected-parameters" in cell["metadata"].get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives the cell it inserts a random id
        if cell.get("cell_type") == "code":
            kept = []
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    continue  # progress bars (timings, rates) and library chatter
                kept.append(_stable_value(output, pairs))
            cell["outputs"] = kept
        cells.append(cell)
    metadata = {k: v for k, v in nb.get("metadata", {}).items() if k not in ("papermill", "widgets")}
    if "language_info" in metadata:
        metadata["language_info"] = {"name": metadata["language_info"].get("name", "python")}
    return {**nb, "cells": cells, "metadata": metadata}


def publish(executed: str | Path, profile: str, root: str | Path | None = None) -> Path:
    """Write the stable form of an executed notebook under ``docs/notebooks/<profile>/``; returns its path."""
    executed = Path(executed)
    nb = json.loads(executed.read_text(encoding="utf-8"))
    out = published_dir(profile, root) / executed.name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(stable_notebook(nb), indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return out
