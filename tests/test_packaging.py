"""The environment definitions agree, and the two README commands stay true."""
from __future__ import annotations

import re
import tomllib

import yaml

from reliable_lalm import paths

ROOT = paths.REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


# The extras `make` installs (Makefile) and environment.yml lists: the test environment verifies Voxtral too.
TEST_ENVIRONMENT_EXTRAS = ("test", "voxtral")


def _constraints() -> dict[str, str]:
    return dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for extra in TEST_ENVIRONMENT_EXTRAS for r in project["optional-dependencies"][extra]]
    declared = {_name(r): r.replace(" ", "") for r in project["dependencies"] + extras}
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
    assert _constraints()["torch"] == "2.13.0"  # the CPU wheel on disk; a plain `torch` would pull a CUDA build


def test_voxtral_extra_is_optional_and_installed_by_make():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "mistral-common" not in {_name(r) for r in project["dependencies"]}  # never in the default install
    assert {_name(r) for r in project["optional-dependencies"]["voxtral"]} == {"mistral-common"}
    assert '-e ".[test,voxtral]"' in (ROOT / "Makefile").read_text()


def test_constraints_satisfy_what_the_installed_extras_require():
    """pip refuses a pin the extra's own requirements exclude (mistral-common 1.13 wants numpy < 2.4 on
    Python <= 3.12): every pinned dependency of an installed extra package must be allowed."""
    from importlib import metadata

    import pytest
    from packaging.requirements import Requirement

    try:
        requirements = metadata.requires("mistral-common") or []
    except metadata.PackageNotFoundError:
        pytest.skip("mistral-common (extra voxtral) is not installed")
    pins = {_name(k): v for k, v in _constraints().items()}
    assert pins["mistral-common"] == metadata.version("mistral-common")
    checked = 0
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # another Python version's line, or an extra of mistral-common we do not install
        pin = pins.get(_name(req.name))
        if pin is not None:
            assert req.specifier.contains(pin, prereleases=True), f"constraints.txt pins {req.name}=={pin}: {line}"
            checked += 1
    assert checked >= 3  # numpy, tiktoken, pydantic at least


def test_readme_and_ci_keep_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make reproduce" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
