"""The package's inside, checked: its layer contract, no import cycle, imports at module top, no dead code.

The layers themselves are declared once, in pyproject.toml's [tool.importlinter] section, and checked by
import-linter; the cycle check walks the same import graph (grimp, import-linter's engine), which sees
imports inside functions as well, so a cycle cannot hide behind a function-local import.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "lib" / "reliable_lalm"
LOCAL_IMPORT_REASON = "# local import:"

grimp = pytest.importorskip("grimp", reason="grimp comes with the test extra (import-linter)")


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "lib"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_import_contract_holds():
    """lint-imports exits non-zero on an upward import, a sibling import across '|', product code importing
    the demo, or core importing torch, HTTP, plotting or argparse."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, env=_environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the package graph is small, but recursion depth should not matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def package_import_graph() -> dict[str, set[str]]:
    sys.path.insert(0, str(ROOT / "lib"))
    try:
        graph = grimp.build_graph("reliable_lalm", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT / "lib"))
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def test_strongly_connected_finds_a_planted_cycle():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = package_import_graph()
    # A package's __init__ re-exporting its modules is not a cycle of meaning; every other edge counts.
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _function_local_imports(path: Path):
    """(line, explained, text) of every import inside a function. The reason comment sits on the line above
    the import, or above the run of consecutive imports it opens."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for block in ast.walk(function):
            for field in ("body", "orelse", "finalbody", "handlers"):
                statements = getattr(block, field, None)
                if not isinstance(statements, list):
                    continue
                explained_run = False
                previous = None
                for node in statements:
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        explained_run, previous = False, node
                        continue
                    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                    same = lines[node.lineno - 1]
                    continues_run = isinstance(previous, (ast.Import, ast.ImportFrom))
                    explained = (LOCAL_IMPORT_REASON in above or LOCAL_IMPORT_REASON in same
                                 or (continues_run and explained_run))
                    explained_run, previous = explained, node
                    yield node.lineno, explained, same.strip()


def test_every_function_local_import_says_why():
    """Imports sit at module top; one inside a function keeps a torch-free command torch-free or an optional
    extra optional, and says so on the line above (`# local import: <reason>`)."""
    unexplained = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for lineno, explained, text in _function_local_imports(path):
            if not explained:
                unexplained.append(f"{path.relative_to(ROOT)}:{lineno}: {text}")
    assert not unexplained, f"{len(unexplained)} function-local imports without a reason:\n" + "\n".join(unexplained)


def _notebook_code(directory: Path) -> Path:
    """Notebook code cells as .py files, so that vulture sees what the notebooks call."""
    directory.mkdir(parents=True, exist_ok=True)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        (directory / f"{notebook.stem.replace('-', '_')}.py").write_text(code + "\n", encoding="utf-8")
    return directory


REFERENCE = re.compile(r"reliable_lalm(?:\.\w+)+:(\w+)")


def _named_by_reference() -> set[str]:
    """Names the package reaches by a "module:attribute" string (registry rows, entry points): families'
    backends, training adapters and tiny builders, named checkpoints' sources, plugin objects."""
    sources = [p.read_text(encoding="utf-8") for p in PACKAGE_DIR.rglob("*.py")]
    sources.append((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {name for text in sources for name in REFERENCE.findall(text)}


def test_reference_strings_are_found():
    assert {"Qwen2AudioBackend", "NativeHFBackend", "DEMO_MODEL"} <= _named_by_reference()


def test_no_definition_without_a_caller(tmp_path):
    """vulture over the package, tools/ and the notebooks' code (not tests/: what only tests use belongs in
    tests). Dynamic uses that no static reader sees (registry strings, entry points, pydantic
    validators) are recognised: names in "module:attribute" strings, pydantic validators."""
    vulture = shutil.which("vulture", path=str(Path(sys.executable).parent))
    assert vulture, "vulture is missing: install the test extra (pip install -e '.[test]')"
    targets = [str(PACKAGE_DIR), str(ROOT / "tools"), str(_notebook_code(tmp_path / "notebooks"))]
    by_reference = sorted(_named_by_reference())
    done = subprocess.run([vulture, *targets, "--min-confidence", "60", "--ignore-names", ",".join(by_reference),
                           "--ignore-decorators", "@field_validator,@model_validator"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    unused = [line for line in done.stdout.splitlines()
              if any(kind in line for kind in ("unused function", "unused method", "unused class",
                                               "unused property", "unused import"))]
    assert not unused, f"{len(unused)} definitions without a caller:\n" + "\n".join(unused)


def test_readme_architecture_names_the_contract_layers_in_order():
    """The README's layer diagram is the contract of pyproject.toml, top to bottom."""
    tomllib = pytest.importorskip("tomllib")
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c["layers"] for c in contract["contracts"] if c["type"] == "layers")
    expected = [" ".join(part.replace("reliable_lalm.", "") for part in layer.split()) for layer in layers]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    diagram = readme.split("## Architecture", 1)[1].split("```", 2)[1].strip().splitlines()
    shown = []
    for line in diagram:
        names = line.split("  ")[0].strip()
        if names and not names.startswith("demo"):
            shown.append(names)
    assert shown == expected, f"README layers {shown} != pyproject layers {expected}"
