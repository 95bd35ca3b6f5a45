"""Run profiles (``params/<name>.yaml``) and the ``parameters`` cells of the notebooks.

A profile says which parameters each notebook gets when ``rlalm reproduce`` executes it::

    description: small, fast run on the embedded demo model     # optional, free text
    extends: demo            # optional: start from params/demo.yaml and override it
    defaults:                # optional: for every notebook that declares the parameter
      seed: 0
    notebooks:               # optional: per notebook stem
      01_baselines:
        n_items: 30
      04_sft:
        epochs: 1
        runs:                # optional: execute the notebook once per entry
          - {modality: sound}
          - {modality: music}
          - {modality: speech}
      07_lora_alpha_ablation:
        runs: []             # an empty list skips the notebook in this profile

Rules (checked before anything runs):

* A key in ``notebooks.<stem>`` or in one of its ``runs`` must be declared in that notebook's
  ``parameters`` cell, else :class:`ProfileError` names the notebook, the key and the declared
  keys. A ``defaults`` key goes only to notebooks that declare it, but at least one notebook
  must declare it (a typo in ``defaults`` is an error too).
* Values must match the notebook's annotation (``str``, ``int``, ``float``, ``bool``, ``list``,
  ``dict``, ``tuple``, ``list[int]``, ``str | None``, ``Optional[...]``, ``Literal[...]``, ...).
  ``bool`` is not accepted for ``int``; an ``int`` is accepted (and converted) for ``float``;
  a YAML list is accepted (and converted) for ``tuple``.
* ``profile`` is set to the profile's name automatically (where declared) and may not be given.
* Parameter names that look like secrets (an ``_``-separated part equal to key, token, secret,
  password, ...) are refused: papermill writes parameters into the output notebook, and the
  OpenAI key is read from the environment inside the library instead.

A notebook's ``parameters`` cell may only hold annotated assignments of literal values, each
optionally with a ``# comment`` (the parameter's help text), e.g.
``profile: str = "demo"  # parameter profile name``.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import yaml

from reliable_lalm import paths
from reliable_lalm.core import jsonio
from reliable_lalm.methods.llm_judge import HF_PREFIX, NORMALIZER_KINDS, normalizer_kind_error
from reliable_lalm.core.results import is_secret_key

PROFILE_KEY = "profile"
TOP_LEVEL_KEYS = ("description", "extends", "defaults", "notebooks")
RUNS_KEY = "runs"
NOTEBOOK_PATTERN = re.compile(r"^\d+_[\w.-]+$")  # executed notebooks are NN_name.ipynb
# A parameter name is secret-like when one of its "_"-separated parts is one of these; parts, not
# substrings, so that max_new_tokens or tokenizer_dir stay allowed while api_key, hf_token are not.
_OPENAI_KEY_VALUE = re.compile(r"^sk-[A-Za-z0-9_-]{16,}$")


class ProfileError(ValueError):
    """A profile or a notebook's parameters cell is invalid (the message lists every problem)."""


class Parameter(NamedTuple):
    """One declared notebook parameter: annotation text, default value and ``# comment``."""

    type_name: str
    default: Any
    comment: str


# ------------------------------------------------------------------------------------------------
# YAML: PyYAML (YAML 1.1) reads 3e-5 as a string and silently keeps the last of duplicate keys;
# both would surface as confusing type errors or lost settings, so the loader fixes them.
# ------------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ProfileError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ProfileError as err:
        raise ProfileError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: invalid YAML: {err}") from None


# ------------------------------------------------------------------------------------------------
# Annotations and type checks
# ------------------------------------------------------------------------------------------------

_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (float,), "bool": (bool,), "list": (list,), "dict": (dict,),
    "tuple": (tuple,), "List": (list,), "Dict": (dict,), "Tuple": (tuple,),
}
_ANY_NAMES = {"Any", "object"}
_NONE = object()  # "value does not match" marker (None is a legitimate value)


def _annotation_name(node: ast.expr) -> str | None:
    """``typing.Optional`` -> ``"Optional"``; ``int`` -> ``"int"``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("typing", "t"):
        return node.attr
    return None


def _check_annotation(node: ast.expr) -> None:
    """Raise ValueError for an annotation this module cannot check (so errors surface at parse time)."""
    _coerce(None, node, probe=True)


def _coerce(value: Any, node: ast.expr, probe: bool = False) -> Any:
    """``value`` converted to the annotation ``node`` (int -> float, list -> tuple) or ``_NONE``.

    With ``probe`` only the annotation's structure is checked (every branch is visited).
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "int | None" as a string
        return _coerce(value, ast.parse(node.value, mode="eval").body, probe)
    if isinstance(node, ast.Constant) and node.value is None:
        return None if value is None else _NONE
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(value, [node.left, node.right], probe)
    name = _annotation_name(node)
    if name is not None:
        if name == "None":
            return None if value is None else _NONE
        if name in _ANY_NAMES:
            return value
        if name not in _SIMPLE_TYPES:
            raise ValueError(f"unsupported annotation {ast.unparse(node)!r}")
        if probe:
            return _NONE
        return _simple(value, name)
    if isinstance(node, ast.Subscript):
        base = _annotation_name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            return _union(value, [args[0], ast.Constant(None)], probe)
        if base == "Union":
            return _union(value, args, probe)
        if base == "Literal":
            literals = [ast.literal_eval(a) for a in args]
            if probe:
                return _NONE
            return value if any(type(value) is type(v) and value == v for v in literals) else _NONE
        if base in ("list", "List"):
            return _sequence(value, args[0], list, probe)
        if base in ("tuple", "Tuple"):
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return _sequence(value, args[0], tuple, probe)
            return _fixed_tuple(value, args, probe)
        if base in ("dict", "Dict"):
            if len(args) != 2:
                raise ValueError(f"unsupported annotation {ast.unparse(node)!r}")
            return _mapping(value, args[0], args[1], probe)
    raise ValueError(f"unsupported annotation {ast.unparse(node)!r}")


def _simple(value: Any, name: str) -> Any:
    if name == "float":
        # An int is a fine float (YAML writes 1 for 1.0); bool is an int subclass but not a number here.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value if isinstance(value, float) else _NONE
    if name in ("int",):
        return value if isinstance(value, int) and not isinstance(value, bool) else _NONE
    if name in ("tuple", "Tuple") and isinstance(value, list):
        return tuple(value)  # YAML has no tuples
    return value if isinstance(value, _SIMPLE_TYPES[name]) else _NONE


def _union(value: Any, options: list[ast.expr], probe: bool) -> Any:
    if probe:
        for option in options:
            _coerce(None, option, probe=True)
        return _NONE
    for option in options:
        out = _coerce(value, option)
        if out is not _NONE:
            return out
    return _NONE


def _sequence(value: Any, item: ast.expr, kind: type, probe: bool) -> Any:
    if probe:
        return _coerce(None, item, probe=True)
    if not isinstance(value, (list, tuple)) or (kind is list and isinstance(value, tuple)):
        return _NONE
    items = [_coerce(v, item) for v in value]
    return _NONE if any(v is _NONE for v in items) else kind(items)


def _fixed_tuple(value: Any, args: list[ast.expr], probe: bool) -> Any:
    if probe:
        for a in args:
            _coerce(None, a, probe=True)
        return _NONE
    if not isinstance(value, (list, tuple)) or len(value) != len(args):
        return _NONE
    items = [_coerce(v, a) for v, a in zip(value, args)]
    return _NONE if any(v is _NONE for v in items) else tuple(items)


def _mapping(value: Any, key: ast.expr, val: ast.expr, probe: bool) -> Any:
    if probe:
        _coerce(None, key, probe=True)
        return _coerce(None, val, probe=True)
    if not isinstance(value, dict):
        return _NONE
    out = {}
    for k, v in value.items():
        ck, cv = _coerce(k, key), _coerce(v, val)
        if ck is _NONE or cv is _NONE:
            return _NONE
        out[ck] = cv
    return out


def check_value(value: Any, type_name: str) -> Any:
    """``value`` converted to the annotation ``type_name``; ValueError when it does not match."""
    node = ast.parse(type_name, mode="eval").body
    out = _coerce(value, node)
    if out is _NONE:
        raise ValueError(f"expected {type_name}, got {type(value).__name__} {value!r}")
    return out


# ------------------------------------------------------------------------------------------------
# The parameters cell
# ------------------------------------------------------------------------------------------------

def read_notebook_cells(path: str | Path) -> list[dict[str, Any]]:
    """The cells of an .ipynb file. Plain JSON on purpose: importing nbformat pulls in jsonschema's
    format checkers, which take seconds, and ``rlalm reproduce --list`` should answer at once."""
    try:
        data = jsonio.load_file(path)
    except (OSError, ValueError) as err:
        raise ProfileError(f"{path}: cannot read the notebook: {err}") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise ProfileError(f"{path}: not a notebook (nbformat 4 JSON with 'cells')")
    return cells


def parameters_cell_index(cells: list[dict[str, Any]]) -> list[int]:
    return [i for i, c in enumerate(cells) if "parameters" in ((c.get("metadata") or {}).get("tags") or [])]


def _parameters_cell(cells: list[dict[str, Any]], path: Path) -> str:
    tagged = parameters_cell_index(cells)
    if len(tagged) != 1:
        where = ", ".join(map(str, tagged))
        raise ProfileError(f"{path}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
                           + (f" (cells {where})" if where else ""))
    index = tagged[0]
    cell = cells[index]
    if cell.get("cell_type") != "code":
        raise ProfileError(f"{path}: the cell tagged 'parameters' (cell {index}) is a {cell.get('cell_type')} cell")
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of the ``#`` comment on that line."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass  # ast.parse reports the syntax error with its line
    return out


def parse_parameters_source(source: str, where: str = "parameters cell") -> dict[str, Parameter]:
    """Parse the text of a parameters cell (see :func:`notebook_parameters`).

    Why not ``papermill.inspect_notebook`` (``PythonTranslator.inspect``): it does not suffice.
    Its line regex silently drops every parameter annotated ``X | None`` (four in each of our
    notebooks, e.g. ``lora_alpha: float | None = None``) and quoted annotations, accepts
    unannotated assignments and statements it cannot read without a word, and returns defaults as
    source text, unchecked. We need every name (a profile key must be declared), literal defaults
    checked against their annotations, and an error naming the line for anything else, so this
    parser (Python's own ``ast`` and ``tokenize``) stays; ``tests/test_profiles.py`` checks it
    agrees with papermill's inspection on every parameter papermill does see, and names the ones
    it misses.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ProfileError(f"{where}, line {err.lineno}: syntax error: {err.msg}") from None
    comments = _comments(source)
    lines = source.splitlines()
    out: dict[str, Parameter] = {}
    for stmt in tree.body:
        text = lines[stmt.lineno - 1].strip() if stmt.lineno <= len(lines) else ""
        prefix = f"{where}, line {stmt.lineno} ({text!r})"
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.simple):
            raise ProfileError(f"{prefix}: only annotated assignments like `name: int = 3` are allowed")
        if stmt.value is None:
            raise ProfileError(f"{prefix}: parameter {stmt.target.id!r} has no default value")
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError:
            raise ProfileError(f"{prefix}: the value of {stmt.target.id!r} is not a literal") from None
        ann = stmt.annotation
        # A quoted annotation ("int | None") is reported and checked by its content.
        type_name = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else ast.unparse(ann)
        try:
            _check_annotation(stmt.annotation)
            check_value(default, type_name)
        except ValueError as err:
            raise ProfileError(f"{prefix}: {stmt.target.id}: {err}") from None
        name = stmt.target.id
        if name in out:
            raise ProfileError(f"{prefix}: parameter {name!r} is declared twice")
        comment = next((comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
                        if n in comments), "")
        out[name] = Parameter(type_name, default, comment)
    return out


def notebook_parameters(path: str | Path) -> dict[str, Parameter]:
    """The parameters declared in a notebook's ``parameters`` cell: name -> (type_name, default, comment).

    The cell may only hold annotated assignments with literal values; anything else is a
    :class:`ProfileError` naming the line.
    """
    path = Path(path)
    return parse_parameters_source(_parameters_cell(read_notebook_cells(path), path),
                                   where=f"{path.name}: parameters cell")


def is_secret_name(name: str) -> bool:
    return is_secret_key(name)


def validate_parameters(notebook: str, declared: Mapping[str, Parameter], params: Mapping[str, Any],
                        *, origin: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Check ``params`` against the declarations; returns (converted params, error messages).

    ``origin`` optionally names where each key came from (for messages).
    """
    errors: list[str] = []
    out: dict[str, Any] = {}
    for key, value in params.items():
        src = f" (from {origin[key]})" if origin and key in origin else ""
        if not isinstance(key, str):
            errors.append(f"notebook {notebook}: parameter name {key!r}{src} is not a string")
            continue
        if is_secret_name(key) or (isinstance(value, str) and _OPENAI_KEY_VALUE.match(value)):
            errors.append(f"notebook {notebook}: parameter {key!r}{src} looks like a secret; secrets are never "
                          "notebook parameters (papermill writes parameters into the output notebook); "
                          "set them in the environment (e.g. OPENAI_API_KEY)")
            continue
        if key not in declared:
            errors.append(f"notebook {notebook}: unknown parameter {key!r}{src}; {notebook} declares: "
                          + (", ".join(declared) or "(nothing)"))
            continue
        try:
            out[key] = check_value(value, declared[key].type_name)
        except ValueError as err:
            errors.append(f"notebook {notebook}: parameter {key!r}{src}: {err}")
            continue
        problem = value_problem(key, out[key])
        if problem:
            errors.append(f"notebook {notebook}: parameter {key!r}{src} = {out[key]!r} {problem}")
    return out, errors


def _normalizer_kinds() -> tuple[str, ...]:
    return (*NORMALIZER_KINDS, f"{HF_PREFIX}<model>")


def _is_normalizer_kind(value: Any) -> bool:
    return isinstance(value, str) and normalizer_kind_error(value) is None


def _table9_alpha_readings() -> tuple[str, ...]:
    from reliable_lalm.training.table9 import ALPHA_READINGS  # torch-free; kept lazy like the normalizer kinds

    return tuple(ALPHA_READINGS)


def _lora_target_modes() -> tuple[str, ...]:
    from reliable_lalm.training.adapters import LORA_TARGETS  # torch-free; kept lazy like the normalizer kinds

    return tuple(LORA_TARGETS)


def _all_positive(values: Any) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


# Values a parameter of this name must have beyond its type (the same names mean the same thing in
# every notebook): checked for profiles before the first notebook starts and in each notebook's
# setup cell before any work, so `limit_per_task: -3` or `normalizer: banana` never run.
VALUE_RULES: dict[str, tuple[Any, str]] = {
    "limit_per_task": (lambda v: v is None or v >= 1, "must be None (all items) or at least 1"),
    "batch_size": (lambda v: v is None or v >= 1, "must be None (automatic) or at least 1"),
    "bootstrap": (lambda v: v >= 0, "must be 0 (no intervals) or more"),
    "knn_samples": (lambda v: v >= 1, "must be at least 1"),
    "knn_k": (lambda v: v >= 0, "must be 0 or more"),
    "knn_temperature": (lambda v: v >= 0, "must be 0 or more"),
    "knn_top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "sft_learning_rate": (lambda v: v > 0, "must be positive"),
    "sft_epochs": (lambda v: v >= 1, "must be at least 1"),
    "sft_batch_size": (lambda v: v >= 1, "must be at least 1"),
    "lora_rank": (lambda v: v >= 1, "must be at least 1"),
    "lora_alpha": (lambda v: v is None or v > 0, "must be None (Table 9) or positive"),
    "lora_alpha_reading": (lambda v: v in _table9_alpha_readings(), "is not a reading of Table 9's alpha row "
                           "(32-32-16 or 32-16-16, docs/paper_settings.md)"),
    "lora_targets": (lambda v: v in _lora_target_modes(), "must be language_model_only or paper_names"),
    "alphas": (lambda v: len(v) > 0 and _all_positive(v), "must be a non-empty list of positive numbers"),
    "max_new_tokens": (lambda v: v is None or 1 <= v <= 8192, "must be None or between 1 and 8192"),
    "device": (lambda v: v in ("auto", "cpu", "mps") or str(v).startswith("cuda"), "must be auto, cpu, mps or cuda[:N]"),
    "normalizer": (_is_normalizer_kind, "is not a normalizer kind"),
}


def value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None when it is, or nothing is known)."""
    rule = VALUE_RULES.get(name)
    if rule is None:
        return None
    check, message = rule
    try:
        ok = bool(check(value))
    except TypeError:
        ok = False
    if name == "normalizer" and not ok:
        message += f" ({', '.join(_normalizer_kinds())})"
    return None if ok else message


# ------------------------------------------------------------------------------------------------
# Profiles
# ------------------------------------------------------------------------------------------------

def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The executed notebooks: ``NN_name.ipynb`` in ``notebooks_dir``, in name order."""
    directory = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    return sorted(p for p in directory.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.stem))


@dataclass
class NotebookSettings:
    """``notebooks.<stem>`` of a profile: shared parameters and optional per-execution ``runs``."""

    params: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] | None = None  # None: run once with ``params``


@dataclass
class Profile:
    """A loaded profile; parameters are validated against the notebooks in ``notebooks_dir``."""

    name: str
    path: Path
    defaults: dict[str, Any]
    notebooks: dict[str, NotebookSettings]
    notebooks_dir: Path
    description: str = ""
    _declared: dict[str, dict[str, Parameter]] = field(default_factory=dict, repr=False)

    # -- notebooks --------------------------------------------------------------------------------
    def notebook_paths(self) -> list[Path]:
        return discover_notebooks(self.notebooks_dir)

    def notebook_path(self, stem: str) -> Path:
        path = self.notebooks_dir / f"{stem}.ipynb"
        if not path.is_file():
            raise ProfileError(f"profile {self.name}: notebook {stem!r} not found in {self.notebooks_dir}")
        return path

    def declared(self, stem: str) -> dict[str, Parameter]:
        if stem not in self._declared:
            self._declared[stem] = notebook_parameters(self.notebook_path(stem))
        return self._declared[stem]

    # -- parameters -------------------------------------------------------------------------------
    def _runs_with_origin(self, stem: str) -> list[tuple[dict[str, Any], dict[str, str], dict[str, Any]]]:
        """Per execution: (merged params, key -> origin, the run's own params)."""
        declared = self.declared(stem)
        settings = self.notebooks.get(stem, NotebookSettings())
        base: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for k, v in self.defaults.items():
            if k in declared and k != PROFILE_KEY:  # defaults reach only notebooks declaring them
                base[k], origin[k] = v, "defaults"
        for k, v in settings.params.items():
            base[k], origin[k] = v, f"notebooks.{stem}"
        runs = [{}] if settings.runs is None else settings.runs
        out = []
        for i, run in enumerate(runs):
            merged, org = dict(base), dict(origin)
            for k, v in run.items():
                merged[k], org[k] = v, f"notebooks.{stem}.runs[{i}]"
            out.append((merged, org, dict(run)))
        return out

    def plan_for(self, stem: str) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
        """Validated (params, run-specific params) per execution, and the error messages."""
        declared = self.declared(stem)
        plan, errors = [], []
        for merged, origin, own in self._runs_with_origin(stem):
            if PROFILE_KEY in merged:
                errors.append(f"notebook {stem}: {PROFILE_KEY!r} is set automatically to the profile name "
                              f"(from {origin[PROFILE_KEY]}); remove it")
                merged.pop(PROFILE_KEY)
            params, errs = validate_parameters(stem, declared, merged, origin=origin)
            errors.extend(errs)
            if PROFILE_KEY in declared:
                try:
                    params[PROFILE_KEY] = check_value(self.name, declared[PROFILE_KEY].type_name)
                except ValueError:
                    errors.append(f"notebook {stem}: {PROFILE_KEY!r} is declared as "
                                  f"{declared[PROFILE_KEY].type_name}, but it receives the profile name (str)")
            own_checked = {k: params[k] for k in own if k in params}
            plan.append((params, own_checked))
        return plan, errors

    def parameters_for(self, stem: str) -> list[dict[str, Any]]:
        """One validated parameter dict per execution of notebook ``stem`` (``[]``: not executed)."""
        plan, errors = self.plan_for(stem)
        if errors:
            raise ProfileError(f"profile {self.name} ({self.path}):\n  " + "\n  ".join(errors))
        return [params for params, _ in plan]

    def check(self, stems: Iterable[str] | None = None) -> None:
        """Validate the whole profile against the notebooks (all problems in one error)."""
        errors = self.errors(stems)
        if errors:
            raise ProfileError(f"profile {self.name} ({self.path}):\n  " + "\n  ".join(errors))

    def errors(self, stems: Iterable[str] | None = None) -> list[str]:
        available = [p.stem for p in self.notebook_paths()]
        errors = [f"notebooks.{s}: no notebook {s}.ipynb in {self.notebooks_dir} (available: "
                  f"{', '.join(available) or 'none'})" for s in self.notebooks if s not in available]
        selected = available if stems is None else list(stems)
        declared_anywhere: set[str] = set()
        for stem in available:
            try:
                declared_anywhere.update(self.declared(stem))
            except ProfileError as err:
                if stem in selected:  # a notebook being edited does not block --only runs of others
                    errors.append(str(err))
        for key in self.defaults:
            if key == PROFILE_KEY:
                errors.append(f"defaults: {PROFILE_KEY!r} is set automatically to the profile name; remove it")
            elif is_secret_name(key):
                errors.append(f"defaults: parameter {key!r} looks like a secret; secrets are never notebook "
                              "parameters, set them in the environment")
            elif key not in declared_anywhere:
                errors.append(f"defaults: parameter {key!r} is declared by no notebook in {self.notebooks_dir}")
        for stem in selected:
            if stem not in self._declared:
                continue  # its parameters cell is broken: reported above
            errors.extend(self.plan_for(stem)[1])
        return errors


def _as_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _parse_notebooks(raw: Any, where: str) -> dict[str, NotebookSettings]:
    out: dict[str, NotebookSettings] = {}
    for stem, body in _as_mapping(raw, f"{where}: notebooks").items():
        if not isinstance(stem, str):
            raise ProfileError(f"{where}: notebooks: key {stem!r} must be a notebook stem like '04_sft' "
                               "(quote it if YAML reads it as a number)")
        body = dict(_as_mapping(body, f"{where}: notebooks.{stem}"))
        runs = body.pop(RUNS_KEY, None)
        if runs is not None:
            if not isinstance(runs, list) or not all(isinstance(r, dict) or r is None for r in runs):
                raise ProfileError(f"{where}: notebooks.{stem}.runs must be a list of mappings")
            runs = [dict(r or {}) for r in runs]
        out[stem] = NotebookSettings(params=body, runs=runs)
    return out


def _resolve_profile_path(name_or_path: str | Path, params_dir: Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        if candidate.is_file():
            return candidate.resolve()
        raise ProfileError(f"profile file not found: {candidate}")
    for suffix in (".yaml", ".yml"):
        path = params_dir / f"{name_or_path}{suffix}"
        if path.is_file():
            return path.resolve()
    available = sorted(p.stem for p in params_dir.glob("*.y*ml")) if params_dir.is_dir() else []
    raise ProfileError(f"profile {str(name_or_path)!r} not found in {params_dir} "
                       f"(available: {', '.join(available) or 'none'})")


def _load_raw(path: Path, params_dir: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, NotebookSettings], str]:
    if path in chain:
        raise ProfileError(f"profile inheritance cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    raw = _read_yaml(path)
    raw = _as_mapping(raw, str(path))
    unknown = sorted(set(map(str, raw)) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ProfileError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    defaults = dict(_as_mapping(raw.get("defaults"), f"{path}: defaults"))
    notebooks = _parse_notebooks(raw.get("notebooks"), str(path))
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ProfileError(f"{path}: description must be text")
    parent = raw.get("extends")
    if parent is None:
        return defaults, notebooks, description
    if not isinstance(parent, str):
        raise ProfileError(f"{path}: extends must be a profile name or path")
    parent_path = _resolve_profile_path(parent, path.parent)  # a name is looked up beside the child
    p_defaults, p_notebooks, p_description = _load_raw(parent_path, params_dir, (*chain, path))
    p_defaults.update(defaults)
    for stem, settings in notebooks.items():
        base = p_notebooks.get(stem, NotebookSettings())
        # Parameters merge key by key; a child's runs list replaces the parent's.
        p_notebooks[stem] = NotebookSettings(params={**base.params, **settings.params},
                                             runs=settings.runs if settings.runs is not None else base.runs)
    return p_defaults, p_notebooks, description or p_description


def load_profile(name_or_path: str | Path, *, params_dir: str | Path | None = None,
                 notebooks_dir: str | Path | None = None) -> Profile:
    """Load ``params/<name>.yaml`` (or a YAML path). Structure errors raise :class:`ProfileError`;
    parameters are checked against the notebooks by :meth:`Profile.parameters_for` / :meth:`Profile.check`.
    """
    params_dir = Path(params_dir or paths.PARAMS_DIR)
    path = _resolve_profile_path(name_or_path, params_dir)
    defaults, notebooks, description = _load_raw(path, params_dir, ())
    return Profile(name=path.stem, path=path, defaults=defaults, notebooks=notebooks,
                   notebooks_dir=Path(notebooks_dir or paths.NOTEBOOKS_DIR), description=description)
