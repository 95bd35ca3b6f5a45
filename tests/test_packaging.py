"""The environment definitions agree, and the two README commands stay true."""
from __future__ import annotations

import re
import tomllib

import yaml

from reliable_lalm import paths

ROOT = paths.REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert listed == declared


def test_transformers_range_excludes_broken_releases():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(r for r in project["dependencies"] if _name(r) == "transformers")
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(spec[len("transformers"):])
    assert not any(v in allowed for v in ("5.10.0", "5.10.1", "5.10.2", "5.10.3"))
    assert "5.24.0" in allowed


def test_constraints_pin_the_cpu_torch_wheel():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"  # the CPU wheel on disk; a plain `torch` would pull a CUDA build


def test_readme_and_ci_keep_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make reproduce" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
