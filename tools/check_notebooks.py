"""Check the notebooks' parameters cells against their models (``reliable_lalm.runner.schema``).

    python tools/check_notebooks.py                 # every notebooks/NN_*.ipynb; exit 1 on a difference
    python tools/check_notebooks.py --fix [PATH..]  # rewrite the parameters cells from the models

The notebooks are edited in JupyterLab; only their parameters cell is derived (from the model), so
``--fix`` touches nothing else. A notebook is matched to its model by its file name's stem.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from reliable_lalm.runner.profiles import (ProfileError, discover_notebooks, notebook_parameters,  # noqa: E402
                                           parameters_cell_index)
from reliable_lalm.runner.schema import SCHEMAS, declarations, parameters_cell  # noqa: E402


def differences(path: Path) -> list[str]:
    """What differs between the notebook's parameters cell and its model (empty: nothing)."""
    if path.stem not in SCHEMAS:
        return [f"{path.name}: no model in reliable_lalm.runner.schema.SCHEMAS"]
    try:
        cell = notebook_parameters(path)
    except ProfileError as err:
        return [str(err)]
    model = declarations(SCHEMAS[path.stem])
    out = [f"{path.name}: {name}: cell {cell.get(name)}, model {model.get(name)}"
           for name in dict.fromkeys([*model, *cell]) if cell.get(name) != model.get(name)]
    if not out and list(cell) != list(model):
        out.append(f"{path.name}: the parameters are in another order than the model's: {', '.join(model)}")
    return out


def fix(path: Path) -> None:
    """Rewrite the parameters cell of ``path`` from its model (the rest of the file untouched)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    index = parameters_cell_index(nb["cells"])[0]
    nb["cells"][index]["source"] = parameters_cell(SCHEMAS[path.stem]).splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/NN_*.ipynb)")
    parser.add_argument("--fix", action="store_true", help="rewrite the parameters cells from the models")
    args = parser.parse_args(argv)
    paths = args.paths or discover_notebooks(ROOT / "notebooks")
    problems = []
    for path in paths:
        found = differences(path)
        if found and args.fix and path.stem in SCHEMAS:
            fix(path)
            found = differences(path)
        problems.extend(found)
    for line in problems:
        print(line)
    if not problems:
        print(f"{len(paths)} notebook(s): parameters cells match their models")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
