"""One place for every path the project reads or writes (showyourwork style).

The repository root is found from this file when the package is installed in editable mode
(``pip install -e .``); ``RLALM_HOME`` overrides it, for example for an installed wheel.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
DEMO_MODEL_DIR = ASSETS_DIR / "demo_model"
# Registry names of the embedded demo model and benchmark (registered by the demo package's entry points).
DEMO_MODEL_NAME = "demo"
SYNTHETIC_BENCHMARK_NAME = "synthetic"
JUDGE_SET_PATH = ASSETS_DIR / "judge" / "judge_set.jsonl"  # labelled outputs that measure a judge


def _find_repo_root() -> Path:
    env = os.environ.get("RLALM_HOME")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parent.parent  # lib/reliable_lalm -> repo root
    if (candidate / "pyproject.toml").exists():
        return candidate
    return Path.cwd().resolve()


REPO_ROOT = _find_repo_root()
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
TABLES_DIR = REPO_ROOT / "tables"
REFERENCE_TABLES_DIR = TABLES_DIR / "reference"
FIGURES_DIR = REPO_ROOT / "figures"
RUNS_DIR = REPO_ROOT / "runs"
# Generated data (synthetic benchmark audio) and cached inference results; never committed.
DATA_DIR = Path(os.environ.get("RLALM_DATA_DIR", REPO_ROOT / "data"))
CACHE_DIR = Path(os.environ.get("RLALM_CACHE_DIR", REPO_ROOT / "cache"))
# ../shared beside the checkout holds the paper and MMAU metadata in this project's workplace.
SHARED_DIR = Path(os.environ.get("RLALM_SHARED_DIR", REPO_ROOT.parent / "shared"))


def tables_dir(profile: str) -> Path:
    return TABLES_DIR / profile


def figures_dir(profile: str) -> Path:
    return FIGURES_DIR / profile


def runs_dir(profile: str) -> Path:
    return RUNS_DIR / profile


def results_dir(profile: str) -> Path:
    """Where result stores (JSONL + manifest) of a profile live; cached between notebook runs."""
    return CACHE_DIR / "results" / profile
