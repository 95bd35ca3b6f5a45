"""Execute the notebooks of a profile with papermill (``rlalm reproduce``, ``make reproduce``;
the command line is :mod:`reliable_lalm.cli.reproduce`).

    rlalm reproduce [--profile demo] [--only 01,04] [--list] [--kernel python3] [--keep-going]
    rlalm reproduce --profile demo --check     # regenerated tables/figures == committed ones?

Every parameter of every planned execution is checked by the notebooks' parameter models
*before* the first notebook starts (see :mod:`reliable_lalm.runner.schema`). Notebooks run in name
order, in the repository root as working directory, into ``runs/<profile>/<stem>.ipynb``; a
notebook executed several times (``runs:`` in the profile) gets the run's own parameters in its
name, e.g. ``runs/demo/04_sft__modality-music.ipynb``. ``runs/<profile>/reproduce.json`` records
the status and timing of each execution (rewritten after each one, so it shows progress too).

A failing notebook stops the run (later notebooks read earlier results) unless ``--keep-going``;
the message names the notebook, the failing cell and the exception, and the exit status is 1
(2 for an invalid profile or command line).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import papermill as pm
from papermill.exceptions import PapermillExecutionError
from papermill.translators import PythonTranslator, papermill_translators
from tqdm.auto import tqdm

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_json
from reliable_lalm.core.progress import use_text_bars
from reliable_lalm.runner.kernel import IPCKernelManager
from reliable_lalm.runner.outputs import canonical_declarations, output_location
from reliable_lalm.runner.profiles import (PROFILE_KEY, Profile, ProfileError, load_profile, notebook_model,
                                           parameters_cell_index, read_notebook_cells, validate_parameters)
from reliable_lalm.runner.publish import PUBLISHED_PROFILES, publish

REPORT_FILE = "reproduce.json"
_NAME_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_MAX_NAME = 120  # characters of the encoded parameters before they are shortened with a hash


class NotebookFailed(RuntimeError):
    """A notebook raised during execution (or its kernel died)."""

    def __init__(self, notebook: str, output: Path, *, cell_index: int | None = None,
                 exec_count: int | None = None, ename: str = "", evalue: str = "", source: str = "",
                 detail: str = ""):
        self.notebook, self.output = notebook, output
        self.cell_index, self.exec_count = cell_index, exec_count
        self.ename, self.evalue, self.source, self.detail = ename, evalue, source, detail
        super().__init__(self.message())

    def message(self) -> str:
        where = "outside any cell" if self.cell_index is None else f"in cell {self.cell_index} (0-based"
        if self.cell_index is not None:
            where += f", In [{self.exec_count}])" if self.exec_count is not None else ")"
        lines = [f"notebook {self.notebook} failed {where}: {self.ename}: {self.evalue}".rstrip(": ")]
        first = next((ln for ln in self.source.splitlines() if ln.strip()), "")
        if first:
            lines.append(f"  cell starts with: {first.strip()[:120]}")
        if self.detail:
            lines.append(f"  {self.detail}")
        lines.append(f"  full traceback in the output notebook: {self.output}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"cell_index": self.cell_index, "exec_count": self.exec_count, "ename": self.ename,
                "evalue": self.evalue, "message": self.message()}


# ------------------------------------------------------------------------------------------------
# Output names and the plan
# ------------------------------------------------------------------------------------------------

def _encode_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "+".join(_encode_value(v) for v in value) or "empty"
    elif isinstance(value, dict):
        text = "+".join(f"{k}={_encode_value(v)}" for k, v in value.items()) or "empty"
    else:
        text = str(value)
    return _NAME_SAFE.sub("_", text).strip("_") or "_"


def output_name(stem: str, params: Mapping[str, Any]) -> str:
    """``04_sft`` + ``{"modality": "music"}`` -> ``04_sft__modality-music.ipynb``."""
    parts = [f"{_NAME_SAFE.sub('_', str(k))}-{_encode_value(v)}" for k, v in params.items() if k != PROFILE_KEY]
    suffix = "__".join(parts)
    if len(suffix) > _MAX_NAME:  # keep file names short but still unique per parameter set
        digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
        suffix = f"{suffix[:_MAX_NAME - 11]}-{digest}"
    return f"{stem}__{suffix}.ipynb" if suffix else f"{stem}.ipynb"


@dataclass
class PlannedRun:
    stem: str
    input: Path
    output: Path
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"notebook": self.stem, "input": relative(self.input), "output": relative(self.output),
                "parameters": _jsonable(self.parameters)}


def relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def select_notebooks(available: Sequence[str], only: str | Sequence[str] | None) -> list[str]:
    """Filter stems by ``--only`` tokens: ``04``, ``4``, ``04_sft`` (comma-separated or a list)."""
    if not only:
        return list(available)
    tokens = [t.strip() for t in (only.split(",") if isinstance(only, str) else only) if t.strip()]
    chosen: set[str] = set()
    for token in tokens:
        hits = [s for s in available if s == token or s.startswith(token + "_")
                or (token.isdigit() and s.split("_", 1)[0].isdigit() and int(s.split("_", 1)[0]) == int(token))]
        if not hits:
            raise ProfileError(f"--only {token!r} matches no notebook (available: {', '.join(available) or 'none'})")
        chosen.update(hits)
    return [s for s in available if s in chosen]


def build_plan(profile: Profile, *, only: str | Sequence[str] | None = None,
               runs_root: str | Path | None = None) -> list[PlannedRun]:
    """Every execution of the selected notebooks, validated; one ProfileError lists all problems."""
    available = [p.stem for p in profile.notebook_paths()]
    if not available:
        raise ProfileError(f"no notebooks (NN_name.ipynb) in {profile.notebooks_dir}")
    stems = select_notebooks(available, only)
    errors = profile.errors(stems)
    plan: list[PlannedRun] = []
    if not errors:
        for stem in stems:
            for params, own in profile.plan_for(stem)[0]:
                tag = run_folder(profile.name, stem, params, notebooks_dir=profile.notebooks_dir,
                                 params_dir=profile.path.parent)
                plan.append(PlannedRun(stem, profile.notebook_path(stem),
                                       _runs_dir(tag, runs_root) / output_name(stem, own), params))
        seen: dict[Path, PlannedRun] = {}
        for run in plan:
            if run.output in seen:
                errors.append(f"notebook {run.stem}: two runs write {run.output.name}; give each entry of "
                              "'runs' different parameters")
            seen[run.output] = run
    if errors:
        raise ProfileError(f"profile {profile.name} ({profile.path}) is invalid; nothing was executed:\n  "
                           + "\n  ".join(errors))
    return plan


def run_folder(profile: str, stem: str, params: Mapping[str, Any], *, notebooks_dir: str | Path | None = None,
               params_dir: str | Path | None = None) -> str:
    """The folder name under ``runs/`` of one execution, by the same rule as its tables and figures
    (:func:`reliable_lalm.runner.outputs.output_location`): ``<profile>`` for the profile's own
    parameters, else ``<profile>+<hash>``. ``params`` are what papermill injects; the notebook's own
    defaults (its model's) fill in the rest, as in the kernel."""
    directory = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    full = {k: p.default for k, p in canonical_declarations(stem, directory).items()}
    full.update(params)
    return output_location(profile, stem, full, params_dir=params_dir, notebooks_dir=directory).tag


def _runs_dir(profile_name: str, runs_root: str | Path | None) -> Path:
    return Path(runs_root) / profile_name if runs_root is not None else paths.runs_dir(profile_name)


# ------------------------------------------------------------------------------------------------
# Execution
# ------------------------------------------------------------------------------------------------

class _DropUnknownParameterWarning(logging.Filter):
    """papermill's regex misreads annotations like ``tuple[int, ...]`` and warns about 'unknown'
    parameters that our own parser has already validated; drop only that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Passed unknown parameter")


_PM_FILTER = _DropUnknownParameterWarning()


def _install_tuple_translator() -> None:
    """papermill writes a tuple parameter as a *string*; teach its Python translator tuples."""
    class TupleAwarePythonTranslator(PythonTranslator):
        @classmethod
        def translate(cls, val):
            if isinstance(val, tuple):
                inner = ", ".join(cls.translate(v) for v in val)
                return f"({inner},)" if len(val) == 1 else f"({inner})"
            return super().translate(val)

    for name in ("python", "python3"):
        papermill_translators.register(name, TupleAwarePythonTranslator)


def _parameters_cell_index(input_path: Path) -> int | None:
    found = parameters_cell_index(read_notebook_cells(input_path))
    return found[0] if found else None


def _run_papermill(run: PlannedRun, *, kernel_name: str | None, log_output: bool, cwd: Path) -> None:
    _install_tuple_translator()
    pm_logger = logging.getLogger("papermill")
    if _PM_FILTER not in pm_logger.filters:
        pm_logger.addFilter(_PM_FILTER)
    run.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        use_text_bars()  # the kernel inherits it: saved notebooks show where each loop ended, not a 0 % widget
        pm.execute_notebook(str(run.input), str(run.output), parameters=run.parameters, cwd=str(cwd),
                            kernel_name=kernel_name, progress_bar=False, log_output=log_output,
                            kernel_manager_class=IPCKernelManager)
    except PapermillExecutionError as err:
        # papermill's cell_index counts the injected-parameters cell it inserted after the
        # 'parameters' cell; report the index in the source notebook the user edits.
        index, detail = err.cell_index, ""
        p = _parameters_cell_index(run.input)
        if run.parameters and p is not None and index is not None and index > p:
            if index == p + 1:
                detail = "the failing cell is the injected-parameters cell"
                index = None
            else:
                index -= 1
        raise NotebookFailed(run.stem, run.output, cell_index=index, exec_count=err.exec_count, ename=err.ename,
                             evalue=err.evalue, source=err.source or "", detail=detail) from err
    except Exception as err:  # kernel death, timeouts, missing kernel: no cell error output exists
        raise NotebookFailed(run.stem, run.output, ename=type(err).__name__, evalue=str(err).strip()[:2000]) from err


WARNING_PREFIX = "WARNING (rlalm):"  # what the library prints for a result the reader must know about


def notebook_warnings(path: Path) -> list[str]:
    """Distinct ``WARNING (rlalm): ...`` lines the executed notebook printed (e.g. an LLM normalization
    that fell back to the rules), in order; recorded in the run report."""
    try:
        cells = read_notebook_cells(path)
    except ProfileError:
        return []
    found: list[str] = []
    for cell in cells:
        for output in cell.get("outputs") or []:
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else str(text)
            for line in text.splitlines():
                line = line.strip()
                start = line.find(WARNING_PREFIX)
                if start >= 0 and line[start:] not in found:
                    found.append(line[start:])
    return found


def execute_notebook(stem: str, profile: str, params: Mapping[str, Any] | None = None, *,
                     notebooks_dir: str | Path | None = None, runs_root: str | Path | None = None,
                     name_params: Mapping[str, Any] | None = None, kernel_name: str | None = None,
                     log_output: bool = False, cwd: str | Path | None = None,
                     params_dir: str | Path | None = None) -> Path:
    """Execute ``notebooks/<stem>.ipynb`` with ``params`` into ``runs/<profile>/`` when they are the
    profile's parameters (profiles from ``params_dir``), else into ``runs/<profile>+<hash>/``;
    returns the output path.

    ``params`` are validated by the notebook's parameters model (ProfileError); ``profile``
    is injected where the notebook declares it. The output name encodes ``name_params``
    (default: ``params`` without ``profile``). A failing notebook raises :class:`NotebookFailed`.
    """
    directory = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    input_path = directory / f"{stem}.ipynb"
    if not input_path.is_file():
        raise ProfileError(f"notebook {stem!r} not found in {directory}")
    model = notebook_model(stem, directory)
    given = dict(params or {})
    if PROFILE_KEY in given and given[PROFILE_KEY] != profile:
        raise ProfileError(f"notebook {stem}: params['profile'] = {given[PROFILE_KEY]!r} differs from profile {profile!r}")
    given.pop(PROFILE_KEY, None)
    checked, errors = validate_parameters(stem, model, given)
    if errors:
        raise ProfileError("\n".join(errors))
    if PROFILE_KEY in model.model_fields:
        checked[PROFILE_KEY] = profile
    label = {k: v for k, v in (checked if name_params is None else name_params).items() if k != PROFILE_KEY}
    tag = run_folder(profile, stem, checked, notebooks_dir=directory, params_dir=params_dir)
    run = PlannedRun(stem, input_path, _runs_dir(tag, runs_root) / output_name(stem, label), checked)
    _run_papermill(run, kernel_name=kernel_name, log_output=log_output, cwd=Path(cwd or paths.REPO_ROOT))
    return run.output


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str)  # a crash never leaves a half-written report


def loud_failure(stream: TextIO, text: str) -> None:
    bar = "=" * 78
    print(f"\n{bar}\nREPRODUCE FAILED\n{text}\n{bar}", file=stream, flush=True)


def reproduce(profile: str | Path = "demo", *, only: str | Sequence[str] | None = None,
              kernel_name: str | None = None, params_dir: str | Path | None = None,
              notebooks_dir: str | Path | None = None, runs_root: str | Path | None = None,
              log_output: bool = False, keep_going: bool = False, cwd: str | Path | None = None,
              stream: TextIO | None = None) -> dict[str, Any]:
    """Execute the profile's notebooks; returns the report also written to ``reproduce.json``.

    Raises ProfileError (nothing executed) for an invalid profile; a failing notebook does not
    raise here: the report's ``status`` is ``"failed"`` and the failure is printed to ``stream``.
    """
    stream = stream or sys.stderr
    prof = load_profile(profile, params_dir=params_dir, notebooks_dir=notebooks_dir)
    plan = build_plan(prof, only=only, runs_root=runs_root)
    out_dir = _runs_dir(prof.name, runs_root)
    report_path = out_dir / REPORT_FILE
    work_dir = Path(cwd or paths.REPO_ROOT)

    # Entries of notebooks outside --only keep their last recorded state.
    previous: list[dict[str, Any]] = []
    if report_path.is_file():
        try:
            previous = json.loads(report_path.read_text(encoding="utf-8")).get("notebooks", [])
        except (OSError, ValueError):
            previous = []
    planned_outputs = {relative(r.output) for r in plan}
    kept = [e for e in previous if e.get("output") not in planned_outputs]
    entries = [{**r.to_dict(), "status": "pending", "started": None, "seconds": None, "error": None} for r in plan]
    report: dict[str, Any] = {
        "profile": prof.name, "profile_file": relative(prof.path), "only": only if only else None,
        "kernel": kernel_name, "cwd": str(work_dir), "started": _now(), "finished": None, "seconds": None,
        "status": "running", "notebooks": entries,
    }

    def save() -> None:
        merged = sorted(kept + entries, key=lambda e: Path(e.get("output", "")).name)
        _write_json(report_path, {**report, "notebooks": merged})

    save()
    t_all = time.perf_counter()
    failures: list[NotebookFailed] = []
    bar = tqdm(total=len(plan), desc=f"reproduce {prof.name}", unit="notebook", file=stream, disable=None)
    try:
        for i, (run, entry) in enumerate(zip(plan, entries), 1):
            if failures and not keep_going:
                entry["status"] = "skipped"
                continue
            tag = f"[{i}/{len(plan)}] {run.output.stem}"
            bar.set_postfix_str(run.output.stem)
            bar.write(f"{tag}: running -> {relative(run.output)}", file=stream)
            entry.update(status="running", started=_now())
            save()
            t0 = time.perf_counter()
            try:
                _run_papermill(run, kernel_name=kernel_name, log_output=log_output, cwd=work_dir)
            except NotebookFailed as err:
                entry.update(status="failed", error=err.to_dict())
                failures.append(err)
                loud_failure(stream, err.message())
            else:
                entry["status"] = "ok"
                if prof.name in PUBLISHED_PROFILES and runs_root is None:  # the committed profile's own runs
                    entry["published"] = relative(publish(run.output, prof.name))
            entry["warnings"] = notebook_warnings(run.output)
            for warning in entry["warnings"]:
                bar.write(f"{tag}: {warning}", file=stream)
            elapsed = time.perf_counter() - t0
            entry["seconds"] = round(elapsed, 3)
            bar.write(f"{tag}: {entry['status']} in {_fmt_seconds(elapsed)}", file=stream)
            bar.update(1)
            save()
    except KeyboardInterrupt:
        for entry in entries:
            if entry["status"] in ("running", "pending"):
                entry["status"] = "interrupted"
        report.update(status="interrupted", finished=_now(), seconds=round(time.perf_counter() - t_all, 3))
        save()
        raise
    finally:
        bar.close()
    report.update(status="failed" if failures else "ok", finished=_now(),
                  seconds=round(time.perf_counter() - t_all, 3))
    save()
    summary = f"profile {prof.name}: {sum(e['status'] == 'ok' for e in entries)}/{len(entries)} notebooks ok " \
              f"in {_fmt_seconds(report['seconds'])}; report {relative(report_path)}"
    if failures:
        failed = "; ".join(f"{f.output.stem} (cell {f.cell_index}: {f.ename})" for f in failures)
        print(f"FAILED {summary}\nfailed: {failed}", file=stream, flush=True)
    else:
        print(summary, file=stream, flush=True)
    return {**report, "notebooks": entries, "report_file": str(report_path)}


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
