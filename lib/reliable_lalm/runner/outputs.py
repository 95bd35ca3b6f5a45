"""Where a notebook execution writes its tables, figures and executed notebook.

The rule (issue 16): ``tables/<profile>/``, ``figures/<profile>/`` and ``runs/<profile>/`` hold
only results of the profile's own parameters, so committed results (``tables/demo/``) are never
overwritten by a run with other parameters. Any other parameter set writes to
``<profile>+<hash>/``, where the hash is of the parameters that differ from the profile's (so
``-p benchmark mine.json`` sends every notebook of that run to the same folder), with a
``parameters.json`` beside the outputs saying what differs.

:func:`output_location` is the one function deciding this; the notebooks' setup cell calls it
through :func:`notebook_setup`, and ``rlalm reproduce`` through :func:`reliable_lalm.runner.reproduce.build_plan`.

"The profile's parameters" of notebook ``stem`` are the defaults of its model
(:data:`reliable_lalm.runner.schema.SCHEMAS`) overridden by the profile's ``defaults``,
``notebooks.<stem>`` and one of its ``runs``. The defaults come from the model and not from the
notebook on disk because editing a parameters cell in JupyterLab is a parameter change too: the
edited notebook must not write into the committed folders.
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from IPython import get_ipython

from reliable_lalm import paths
from reliable_lalm.core import progress
from reliable_lalm.core.quiet import silence_known_warnings
from reliable_lalm.runner.profiles import (PROFILE_KEY, TOP_LEVEL_KEYS, ProfileError, is_secret_name, load_profile,
                                           notebook_model, validate_parameters)
from reliable_lalm.runner.schema import Parameter, declarations, renamed_hint

PARAMETERS_FILE = "parameters.json"
HASH_CHARS = 8


def canonical(value: Any) -> str:
    """JSON text that two equal parameter values share (tuples as lists, keys sorted)."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def parameters_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(params)).encode()).hexdigest()[:HASH_CHARS]


def canonical_declarations(stem: str, notebooks_dir: str | Path | None = None) -> dict[str, Parameter]:
    """The declared parameters of notebook ``stem`` as its model states them; a notebook without
    a model (a user's, a test fixture) is read from ``notebooks_dir``."""
    return declarations(notebook_model(stem, notebooks_dir))


def profile_parameter_sets(profile: str, stem: str, *, params_dir: str | Path | None = None,
                           notebooks_dir: str | Path | None = None) -> list[dict[str, Any]] | None:
    """Every full parameter set (canonical defaults + profile) the profile runs notebook ``stem``
    with; ``None`` when there is no profile of that name (nothing can equal it)."""
    try:
        prof = load_profile(profile, params_dir=params_dir, notebooks_dir=notebooks_dir)
    except ProfileError:
        return None
    declared = canonical_declarations(stem, notebooks_dir)
    base = {k: p.default for k, p in declared.items()}
    try:
        runs = prof.parameters_for(stem)
    except ProfileError:
        return None
    return [{**base, **run, **({PROFILE_KEY: profile} if PROFILE_KEY in declared else {})} for run in runs]


@dataclass(frozen=True)
class OutputLocation:
    """The output folder name (``tag``) of one execution and why it was chosen."""

    profile: str
    notebook: str
    tag: str
    parameters: dict[str, Any]
    differs: dict[str, Any] | None = field(default=None)  # key -> {"profile": v, "run": v}; None: no profile

    @property
    def is_profile(self) -> bool:
        return self.tag == self.profile

    @property
    def tables(self) -> Path:
        return paths.tables_dir(self.tag)

    @property
    def figures(self) -> Path:
        return paths.figures_dir(self.tag)

    @property
    def runs(self) -> Path:
        return paths.runs_dir(self.tag)

    def describe(self) -> str:
        if self.is_profile:
            return f"parameters of profile {self.profile!r}: outputs in tables/{self.tag}/ and figures/{self.tag}/"
        what = ("no profile of that name" if self.differs is None
                else "differs from the profile in " + ", ".join(f"{k}={v['run']!r}" for k, v in self.differs.items()))
        return f"{what}: outputs in tables/{self.tag}/ and figures/{self.tag}/ (with {PARAMETERS_FILE})"

    def record(self) -> dict[str, Any]:
        return {"profile": self.profile, "folder": self.tag, "differs_from_profile": self.differs,
                "notebooks": {self.notebook: json.loads(canonical(self.parameters))}}


def output_location(profile: str, stem: str, parameters: Mapping[str, Any], *,
                    params_dir: str | Path | None = None,
                    notebooks_dir: str | Path | None = None) -> OutputLocation:
    """``profile`` when ``parameters`` (a full set: every declared parameter) equal one of the
    profile's sets for notebook ``stem``, else ``<profile>+<hash of the differing parameters>``."""
    params = {k: v for k, v in parameters.items()}
    params.setdefault(PROFILE_KEY, profile)
    sets = profile_parameter_sets(profile, stem, params_dir=params_dir, notebooks_dir=notebooks_dir)
    if sets is None:
        return OutputLocation(profile, stem, f"{profile}+{parameters_hash(params)}", params, None)
    best: dict[str, Any] | None = None
    for candidate in sets:
        keys = sorted(set(candidate) | set(params))
        diff = {k: {"profile": candidate.get(k), "run": params.get(k)} for k in keys
                if canonical(candidate.get(k)) != canonical(params.get(k))}
        if best is None or len(diff) < len(best):
            best = diff
    if not sets:  # the profile does not run this notebook: everything is "other parameters"
        best = {k: {"profile": None, "run": v} for k, v in sorted(params.items()) if k != PROFILE_KEY}
    if not best:
        return OutputLocation(profile, stem, profile, params, {})
    return OutputLocation(profile, stem, f"{profile}+{parameters_hash({k: v['run'] for k, v in best.items()})}",
                          params, best)


def write_parameters_file(location: OutputLocation) -> list[Path]:
    """``parameters.json`` in the tables and figures folders of a non-profile location (merged with
    an existing one: several notebooks of one run share a folder)."""
    written = []
    for directory in (location.tables, location.figures):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PARAMETERS_FILE
        record = location.record()
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            record["notebooks"] = {**old.get("notebooks", {}), **record["notebooks"]}
        except (OSError, ValueError):
            pass
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def injected_parameter_names(history: list[str] | None = None) -> list[str] | None:
    """Names assigned by papermill's injected-parameters cell (``# Parameters`` then assignments),
    read from IPython's input history; ``None`` outside a papermill run."""
    if history is None:
        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return None
            return [t.id for stmt in tree.body if isinstance(stmt, ast.Assign)
                    for t in stmt.targets if isinstance(t, ast.Name)]
    return None


def _profile_of_injected_file(injected: Mapping[str, Any], params_dir: Path) -> str | None:
    """The profile whose YAML file papermill was given with ``-f params/<name>.yaml`` (it injects the
    file's top-level keys ``description``/``extends``/``defaults``/``notebooks`` as variables)."""
    keys = {k: injected[k] for k in TOP_LEVEL_KEYS if k in injected}
    for path in sorted(params_dir.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and all(canonical(raw.get(k)) == canonical(v) for k, v in keys.items()) \
                and set(k for k in TOP_LEVEL_KEYS if k in raw) == set(keys):
            return path.stem
    return None


def quiet_library_bars() -> None:
    """In a kernel, unless widgets were asked for (``RLALM_PROGRESS=widget``), switch off the
    libraries' own progress bars: huggingface_hub's and transformers' ("Loading weights") are
    widgets there, saved frozen at 0 % by a headless run. Our own bars are text
    (:mod:`reliable_lalm.core.progress`)."""
    if progress.mode() == "widget" or not progress.in_kernel():
        return
    # local import: huggingface_hub only inside a kernel (rlalm reproduce imports this module)
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # transformers reads this when it is imported
    if "transformers" in sys.modules:  # already imported: its own switch
        # local import: transformers is already imported here; importing it above would load torch
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def notebook_setup(stem: str, namespace: dict[str, Any], *, history: list[str] | None = None,
                   params_dir: str | Path | None = None, quiet: bool = False) -> OutputLocation:
    """The first thing a notebook runs after its parameters cell (all checks before any work).

    * Papermill's conventions work: ``-p profile NAME`` runs the notebook with that profile's
      parameters (a parameter given explicitly with ``-p`` still wins), and ``-f params/NAME.yaml``
      (a profile file) is recognised as ``-p profile NAME``. Resolved values are written back into
      ``namespace`` (the notebook's globals).
    * An unknown parameter, a secret-like name (keys come from the environment, never parameters),
      or a value of the wrong type is a :class:`ProfileError` naming it.
    * The output folder follows :func:`output_location`; it is printed.
    """
    params_dir = Path(params_dir or paths.PARAMS_DIR)
    declared = canonical_declarations(stem)
    injected_names = injected_parameter_names(history) or []
    silence_known_warnings()
    quiet_library_bars()
    injected = {n: namespace.get(n) for n in injected_names}
    errors: list[str] = []
    profile_file_keys = [k for k in injected if k in TOP_LEVEL_KEYS and k not in declared]
    if profile_file_keys:
        name = _profile_of_injected_file(injected, params_dir)
        if name is None:
            errors.append(f"notebook {stem}: parameters {profile_file_keys} look like a profile file given with -f; "
                          f"it matches no file in {params_dir}: use -p profile NAME")
        else:
            if PROFILE_KEY in injected and injected[PROFILE_KEY] != name:
                errors.append(f"notebook {stem}: -f {name}.yaml and -p profile {injected[PROFILE_KEY]} disagree")
            namespace[PROFILE_KEY] = name
            injected[PROFILE_KEY] = name
            for k in profile_file_keys:
                injected.pop(k)
                namespace.pop(k, None)
    for n in injected:
        if n in declared:
            continue
        if is_secret_name(n):
            errors.append(f"notebook {stem}: parameter {n!r} looks like a secret; secrets are read from the "
                          f"environment only (e.g. export OPENAI_API_KEY), never passed as parameters")
        else:
            errors.append(f"notebook {stem}: unknown parameter {n!r}{renamed_hint(n)}; {stem} declares: "
                          f"{', '.join(declared)}")
    if errors:
        raise ProfileError("\n".join(errors))
    profile = str(namespace.get(PROFILE_KEY, "demo"))
    sets = profile_parameter_sets(profile, stem, params_dir=params_dir)
    if sets:  # the profile's values for every parameter not given explicitly
        explicit = {k: v for k, v in injected.items() if k in declared and k != PROFILE_KEY}
        chosen = min(sets, key=lambda s: sum(canonical(s.get(k)) != canonical(v) for k, v in explicit.items()))
        for k, v in chosen.items():
            if k in declared and k not in explicit:
                namespace[k] = v
    parameters = {k: namespace.get(k) for k in declared}
    _, type_errors = validate_parameters(stem, notebook_model(stem), parameters)
    if type_errors:
        raise ProfileError("\n".join(type_errors))
    location = output_location(profile, stem, parameters, params_dir=params_dir)
    if not location.is_profile:
        write_parameters_file(location)
    if not quiet:
        print(location.describe())
    return location
