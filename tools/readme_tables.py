"""Copies the demo's Table 1 and Table 2 from tables/demo/ into README.md (the "Demo results" section).

Run after regenerating the demo outputs (`make reproduce`): python tools/readme_tables.py
`tests/test_readme_numbers.py` checks that the README's copies equal the committed tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COPIED_TABLES = ("table1", "table2")  # tables/demo/<name>.md, copied into the README


def table_lines(markdown: str) -> list[str]:
    """The pipe-table lines (header, alignment, rows) of a table file written by reporting.save_table."""
    return [line for line in markdown.splitlines() if line.startswith("|")]


def replace_table(readme: str, lines: list[str]) -> str:
    """``readme`` with the table whose header and alignment lines are ``lines[:2]`` replaced by ``lines``."""
    text = readme.splitlines()
    for i in range(len(text) - 1):
        if text[i] == lines[0] and text[i + 1] == lines[1]:
            end = i
            while end < len(text) and text[end].startswith("|"):
                end += 1
            return "\n".join(text[:i] + lines + text[end:]) + ("\n" if readme.endswith("\n") else "")
    raise ValueError(f"README.md has no table with the header {lines[0][:60]!r}...")


def readme_with_demo_tables(readme: str, tables_dir: Path) -> str:
    for name in COPIED_TABLES:
        readme = replace_table(readme, table_lines((tables_dir / f"{name}.md").read_text(encoding="utf-8")))
    return readme


def main() -> int:
    before = README.read_text(encoding="utf-8")
    after = readme_with_demo_tables(before, ROOT / "tables" / "demo")
    if after != before:
        README.write_text(after, encoding="utf-8")
    print("README.md: demo tables " + ("updated" if after != before else "already current"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
