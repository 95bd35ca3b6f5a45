"""``rlalm reproduce --check``: are the regenerated tables and figures the committed ones?

Every file committed under ``tables/<profile>/`` and ``figures/<profile>/`` (git ``HEAD``) is
compared with the file in the working tree: byte for byte, and where they differ the verdict
names what differs — the cells of a CSV (a table, or the data written beside a figure by
``reporting.save_figure(..., data=...)``), the lines of a Markdown or LaTeX table, or just "bytes
differ" for a PNG/PDF. A committed file that is missing, and a regenerated file that is not
committed, are differences too. The exit status is non-zero on any difference, so ``make
reproduce`` fails loudly instead of silently rewriting committed results (issue 16).
"""
from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from reliable_lalm import paths
from reliable_lalm.runner.publish import DOCS_NOTEBOOKS, PUBLISHED_PROFILES

MAX_CELLS = 8  # differing cells (or lines) shown per file


class CheckUnavailable(RuntimeError):
    """No git checkout to compare with (e.g. an unpacked archive)."""


def _git(args: Sequence[str], root: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError as err:
        raise CheckUnavailable("git is not installed; --check compares with the committed files") from err
    if done.returncode != 0:
        raise CheckUnavailable(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


@dataclass
class FileDifference:
    path: str
    kind: str  # "changed", "missing", "not committed"
    details: list[str] = field(default_factory=list)


@dataclass
class CheckResult:
    folders: list[str]
    identical: list[str]
    differences: list[FileDifference]
    revision: str = "HEAD"

    @property
    def ok(self) -> bool:
        return not self.differences and bool(self.identical)

    def verdict(self) -> str:
        where = ", ".join(f"{f}/" for f in self.folders)
        if not self.identical and not self.differences:
            return f"check: nothing committed under {where} to compare with"
        if not self.differences:
            return f"check: {len(self.identical)} files identical to {self.revision} ({where})"
        total = len(self.identical) + len(self.differences)
        lines = [f"check: {len(self.differences)} of {total} files differ from {self.revision} ({where}); "
                 f"{len(self.identical)} identical"]
        for diff in self.differences:
            lines.append(f"  {diff.path}: {diff.kind}")
            lines.extend(f"      {d}" for d in diff.details)
        return "\n".join(lines)


def _csv_cells(old: bytes, new: bytes) -> list[str]:
    """The cells that differ between two CSV files, as ``row | column: old -> new``."""
    import pandas as pd

    a = pd.read_csv(io.BytesIO(old), header=None, dtype=str, keep_default_na=False)
    b = pd.read_csv(io.BytesIO(new), header=None, dtype=str, keep_default_na=False)
    if a.shape != b.shape:
        return [f"shape {a.shape[0]}x{a.shape[1]} -> {b.shape[0]}x{b.shape[1]}"]
    # Header rows: the leading rows whose first cell is blank or that precede the first data row;
    # labelling by first column and by the stacked header values is enough to find a cell.
    n_header = 1
    for i in range(1, min(len(a), 6)):
        if a.iloc[i, 0] == "" or (a.iloc[i, 1:] == "").all():
            n_header = i + 1
        else:
            break
    out = []
    for i in range(len(a)):
        for j in range(a.shape[1]):
            if a.iat[i, j] != b.iat[i, j]:
                column = " / ".join(v for v in a.iloc[:n_header, j] if v) or f"column {j}"
                row = a.iat[i, 0] or f"row {i}"
                out.append(f"{row} | {column}: {a.iat[i, j]} -> {b.iat[i, j]}")
    return out


def _text_lines(old: bytes, new: bytes) -> list[str]:
    import difflib

    a = old.decode("utf-8", errors="replace").splitlines()
    b = new.decode("utf-8", errors="replace").splitlines()
    return [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def describe_difference(path: str, old: bytes, new: bytes) -> list[str]:
    suffix = Path(path).suffix
    try:
        if suffix == ".csv":
            found = _csv_cells(old, new)
        elif suffix in (".md", ".tex", ".json", ".txt", ".ipynb"):
            found = _text_lines(old, new)
        else:
            return [f"bytes differ ({len(old)} -> {len(new)} bytes)"]
    except Exception as err:  # noqa: BLE001 - an unparsable file still differs
        return [f"bytes differ (could not compare contents: {err})"]
    if not found:
        return ["bytes differ (same cells: formatting or line endings)"]
    more = len(found) - MAX_CELLS
    return found[:MAX_CELLS] + ([f"... and {more} more"] if more > 0 else [])


def check_outputs(profile: str = "demo", *, root: str | Path | None = None, revision: str = "HEAD") -> CheckResult:
    """Compare ``tables/<profile>/`` and ``figures/<profile>/`` (and for a published profile the
    executed notebooks under ``docs/notebooks/<profile>/``) with their committed versions."""
    root = Path(root or paths.REPO_ROOT)
    folders = [f"tables/{profile}", f"figures/{profile}"]
    published = f"{DOCS_NOTEBOOKS}/{profile}"
    if profile in PUBLISHED_PROFILES and ((root / published).is_dir()
                                          or _git(["ls-tree", "--name-only", revision, "--", published], root).strip()):
        folders.append(published)  # once published (or committed), compared like the tables
    committed = [p for p in _git(["ls-tree", "-r", "--name-only", revision, "--", *folders], root)
                 .decode().splitlines() if p]
    present = sorted(str(p.relative_to(root)) for f in folders if (root / f).is_dir()
                     for p in (root / f).rglob("*") if p.is_file())
    identical, differences = [], []
    for rel in committed:
        old = _git(["show", f"{revision}:{rel}"], root)
        path = root / rel
        if not path.is_file():
            differences.append(FileDifference(rel, "missing (committed, not regenerated)"))
            continue
        new = path.read_bytes()
        if new == old:
            identical.append(rel)
        else:
            differences.append(FileDifference(rel, "changed", describe_difference(rel, old, new)))
    for rel in sorted(set(present) - set(committed)):
        differences.append(FileDifference(rel, "not committed (new output)"))
    return CheckResult(folders, identical, differences, revision)
