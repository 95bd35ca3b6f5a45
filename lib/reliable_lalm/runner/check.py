"""``rlalm reproduce --check``: are the regenerated tables and figures the committed ones?

Every file committed under ``tables/<profile>/`` and ``figures/<profile>/`` (git ``HEAD``) is
compared with the file in the working tree. Identical bytes pass. Otherwise:

* a CSV, Markdown or LaTeX table passes when its text differs only in numbers, each within one
  unit of its last printed digit (``48.8300`` against ``48.8301``; a value at a rounding boundary
  may print either way when a far digit moves, as it does across CPU kernels); integers (counts)
  must be equal;
* a PNG or PDF passes when the data CSV written beside it (``reporting.save_figure(..., data=...)``)
  passes: image bytes are not portable across CPUs (a coordinate may move in the sixth digit),
  the plotted numbers are compared instead. A figure without a data CSV is compared by its bytes.

Where a file fails, the verdict names what differs: the cells of a CSV, the lines of a Markdown or
LaTeX table, or "bytes differ" for a PNG/PDF. A committed file that is missing, and a regenerated
file that is not committed, are differences too. The exit status is non-zero on any difference, so
``make reproduce`` fails loudly instead of silently rewriting committed results.
"""
from __future__ import annotations

import difflib
import io
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from reliable_lalm import paths
from reliable_lalm.runner.publish import DOCS_NOTEBOOKS, PUBLISHED_PROFILES

MAX_CELLS = 8  # differing cells (or lines) shown per file
TEXT_TABLES = (".csv", ".md", ".tex")
FIGURES = (".png", ".pdf")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


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
    # Files that differ in bytes but pass: path -> why (numbers within the printed precision,
    # or a figure whose data CSV passes).
    equal_at_precision: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences and bool(self.identical or self.equal_at_precision)

    def verdict(self) -> str:
        where = ", ".join(f"{f}/" for f in self.folders)
        if not self.identical and not self.differences:
            return f"check: nothing committed under {where} to compare with"
        close = [f"  {path}: {why}" for path, why in self.equal_at_precision.items()]
        if not self.differences:
            if not close:
                return f"check: {len(self.identical)} files identical to {self.revision} ({where})"
            return "\n".join([f"check: {len(self.identical) + len(close)} files equal to {self.revision} ({where}): "
                              f"{len(self.identical)} identical, {len(close)} at the printed precision"] + close)
        total = len(self.identical) + len(close) + len(self.differences)
        lines = [f"check: {len(self.differences)} of {total} files differ from {self.revision} ({where}); "
                 f"{len(self.identical)} identical" + (f", {len(close)} at the printed precision" if close else "")]
        for diff in self.differences:
            lines.append(f"  {diff.path}: {diff.kind}")
            lines.extend(f"      {d}" for d in diff.details)
        return "\n".join(lines)


def _csv_cells(old: bytes, new: bytes) -> list[str]:
    """The cells that differ between two CSV files, as ``row | column: old -> new``."""
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


def _decimals(token: str) -> int | None:
    """Digits after the point of a printed number; ``None`` for an integer or an exponent form."""
    if "e" in token.lower() or "." not in token:
        return None
    return len(token.split(".", 1)[1])


def numbers_within_printed_precision(old: bytes, new: bytes) -> tuple[bool, int]:
    """Whether two text tables differ only in numbers printed with decimals, each by at most one
    unit of its last printed digit; and how many numbers differ. Integers and text must be equal."""
    try:
        a = old.decode("utf-8").splitlines()
        b = new.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return False, 0
    if len(a) != len(b):
        return False, 0
    moved = 0
    for line_a, line_b in zip(a, b):
        if line_a == line_b:
            continue
        if _NUMBER.split(line_a) != _NUMBER.split(line_b):
            return False, 0
        for x, y in zip(_NUMBER.findall(line_a), _NUMBER.findall(line_b)):
            if x == y:
                continue
            places = _decimals(x)
            if places is None or places != _decimals(y):
                return False, 0
            # Compared in units of the last printed digit, exactly (integers, not floats).
            if abs(int(x.replace(".", "")) - int(y.replace(".", ""))) > 1:
                return False, 0
            moved += 1
    return True, moved


def _text_lines(old: bytes, new: bytes) -> list[str]:
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
    identical, differences, close = [], [], {}
    old_bytes: dict[str, bytes] = {}
    for rel in committed:
        old_bytes[rel] = _git(["show", f"{revision}:{rel}"], root)
    figures = []
    for rel in committed:
        old = old_bytes[rel]
        path = root / rel
        if not path.is_file():
            differences.append(FileDifference(rel, "missing (committed, not regenerated)"))
            continue
        new = path.read_bytes()
        if new == old:
            identical.append(rel)
        elif Path(rel).suffix in FIGURES:
            figures.append((rel, old, new))
        else:
            ok, moved = (numbers_within_printed_precision(old, new) if Path(rel).suffix in TEXT_TABLES
                         else (False, 0))
            if ok:
                close[rel] = f"{moved} number(s) within one unit of the last printed digit"
            else:
                differences.append(FileDifference(rel, "changed", describe_difference(rel, old, new)))
    failed = {d.path for d in differences}
    for rel, old, new in figures:  # after the CSVs: a figure passes by its data
        data = str(Path(rel).with_suffix(".csv"))
        if data in old_bytes and data not in failed and (root / data).is_file():
            close[rel] = f"image bytes differ; its data ({Path(data).name}) is equal at the printed precision"
        else:
            differences.append(FileDifference(rel, "changed", describe_difference(rel, old, new)))
    for rel in sorted(set(present) - set(committed)):
        differences.append(FileDifference(rel, "not committed (new output)"))
    return CheckResult(folders, identical, differences, revision, close)
