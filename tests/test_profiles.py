"""Profiles (params/<name>.yaml) and notebook parameters cells."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from reliable_lalm.runner.profiles import (ProfileError, discover_notebooks, is_secret_name, load_profile,
                                           notebook_parameters, parse_parameters_source)
from reliable_lalm.runner.schema import Parameter, check_value

FIXTURES = Path(__file__).parent / "nb_fixtures"


@pytest.fixture()
def dirs(tmp_path):
    """A notebooks dir with the two fixture notebooks and an empty params dir."""
    nb_dir, params_dir = tmp_path / "notebooks", tmp_path / "params"
    nb_dir.mkdir()
    params_dir.mkdir()
    for name in ("01_alpha.ipynb", "02_beta.ipynb"):
        shutil.copy(FIXTURES / name, nb_dir / name)
    return nb_dir, params_dir


def write_profile(params_dir: Path, name: str, text: str) -> Path:
    path = params_dir / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def make_notebook(path: Path, *cells: tuple[str, list[str]], cell_type: str = "code") -> Path:
    # Plain nbformat-4 JSON (importing nbformat costs seconds; the parser reads JSON too).
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": cell_type, "metadata": {"tags": tags}, "source": source, "id": f"c{i}",
                     **({"outputs": [], "execution_count": None} if cell_type == "code" else {})}
                    for i, (source, tags) in enumerate(cells)]}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# parameters cells
# ------------------------------------------------------------------------------------------------

def test_notebook_parameters_reads_types_defaults_and_comments():
    params = notebook_parameters(FIXTURES / "01_alpha.ipynb")
    assert params == {
        "profile": Parameter("str", "demo", "parameter profile name"),
        "n_items": Parameter("int", 3, "items to use"),
        "lr": Parameter("float", 0.5, ""),
        "tag": Parameter("str | None", None, "optional label"),
        "sizes": Parameter("tuple[int, ...]", (1, 2), ""),
        "out_dir": Parameter("str", "", "where to write record.json (empty: nowhere)"),
    }
    # The result unpacks as (type_name, default, comment).
    type_name, default, comment = params["n_items"]
    assert (type_name, default, comment) == ("int", 3, "items to use")


def test_parameters_cell_multiline_value_and_quoted_annotation():
    src = 'mods: list[str] = [\n    "sound",  # first\n    "music",\n]\nx: "int | None" = None  # maybe\n'
    params = parse_parameters_source(src)
    assert params["mods"] == Parameter("list[str]", ["sound", "music"], "first")
    assert params["x"] == Parameter("int | None", None, "maybe")


@pytest.mark.parametrize("line, expect", [
    ("x = 3", "only annotated assignments"),
    ("x: int = int('3')", "not a literal"),
    ("x: int", "no default value"),
    ("x: int = 'a'", "expected int"),
    ("x: set[int] = {1}", "unsupported annotation"),
    ("import os", "only annotated assignments"),
    ("a: int = 2", "declared twice"),
    ("%matplotlib inline", "syntax error"),
])
def test_parameters_cell_rejects_anything_else_naming_the_line(line, expect):
    with pytest.raises(ProfileError) as err:
        parse_parameters_source("a: int = 1  # fine\n" + line + "\n", where="nb.ipynb: parameters cell")
    assert "line 2" in str(err.value) and expect in str(err.value)


def test_parameters_cell_must_be_exactly_one_tagged_code_cell(tmp_path):
    none = make_notebook(tmp_path / "none.ipynb", ("a: int = 1", []))
    two = make_notebook(tmp_path / "two.ipynb", ("a: int = 1", ["parameters"]), ("b: int = 2", ["parameters"]))
    ok = make_notebook(tmp_path / "ok.ipynb", ("print(1)", []), ("a: int = 1", ["other", "parameters"]))
    with pytest.raises(ProfileError, match="exactly one cell tagged 'parameters', found 0"):
        notebook_parameters(none)
    with pytest.raises(ProfileError, match="found 2"):
        notebook_parameters(two)
    assert notebook_parameters(ok) == {"a": Parameter("int", 1, "")}
    markdown = make_notebook(tmp_path / "md.ipynb", ("a: int = 1", ["parameters"]), cell_type="markdown")
    with pytest.raises(ProfileError, match="is a markdown cell"):
        notebook_parameters(markdown)


@pytest.mark.parametrize("value, type_name, expected", [
    (1, "float", 1.0),
    (3e-5, "float", 3e-5),
    (7, "int", 7),
    ("a", "str | None", "a"),
    (None, "str | None", None),
    (None, "Optional[int]", None),
    ([1, 2], "tuple[int, ...]", (1, 2)),
    ([1, "a"], "tuple[int, str]", (1, "a")),
    ([1, 2], "tuple", (1, 2)),
    ({"a": 1}, "dict[str, float]", {"a": 1.0}),
    (["x"], "list[str]", ["x"]),
    ("music", "Literal['sound', 'music']", "music"),
    (True, "bool", True),
    ({"k": [1]}, "dict", {"k": [1]}),
])
def test_check_value_accepts_and_converts(value, type_name, expected):
    out = check_value(value, type_name)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, type_name", [
    (True, "int"),          # bool is an int subclass, but a flag is not a count
    ("3", "int"),
    (1.5, "int"),
    (3, "str | None"),
    ([1], "list[str]"),
    ("speech", "Literal['sound', 'music']"),
    ([1, 2, 3], "tuple[int, int]"),
    ({"a": "x"}, "dict[str, float]"),
    (None, "str"),
    (1, "bool"),
])
def test_check_value_rejects_wrong_types(value, type_name):
    with pytest.raises(ValueError, match="expected"):
        check_value(value, type_name)


def test_secret_names_are_parts_not_substrings():
    assert is_secret_name("openai_api_key") and is_secret_name("hf_token") and is_secret_name("apiKey")
    assert is_secret_name("password") and is_secret_name("client_secret")
    assert not is_secret_name("max_new_tokens") and not is_secret_name("tokenizer_dir")
    assert not is_secret_name("keyword") and not is_secret_name("monkey")


# ------------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------------

def test_profile_defaults_notebooks_and_runs(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "fake", """
        description: test profile
        defaults:
          out_dir: /tmp/somewhere
          n_items: 5            # only 01_alpha declares it
        notebooks:
          01_alpha:
            lr: 1               # int for a float parameter: converted
            sizes: [3, 4]       # YAML list for a tuple parameter: converted
            tag: 3e-5-run       # a string, not a float
          02_beta:
            runs:
              - {modality: music}
              - {modality: speech, out_dir: /tmp/other}
    """)
    prof = load_profile("fake", params_dir=params_dir, notebooks_dir=nb_dir)
    assert prof.name == "fake" and prof.description == "test profile"
    assert [p.stem for p in prof.notebook_paths()] == ["01_alpha", "02_beta"]
    alpha = prof.parameters_for("01_alpha")
    assert alpha == [{"out_dir": "/tmp/somewhere", "n_items": 5, "lr": 1.0, "sizes": (3, 4), "tag": "3e-5-run",
                      "profile": "fake"}]
    assert type(alpha[0]["lr"]) is float and type(alpha[0]["sizes"]) is tuple
    beta = prof.parameters_for("02_beta")
    assert beta == [{"out_dir": "/tmp/somewhere", "modality": "music", "profile": "fake"},
                    {"out_dir": "/tmp/other", "modality": "speech", "profile": "fake"}]
    prof.check()  # the whole profile is valid


def test_profile_by_path_and_scientific_floats(dirs, tmp_path):
    nb_dir, _ = dirs
    path = tmp_path / "elsewhere.yaml"
    path.write_text("notebooks:\n  01_alpha:\n    lr: 3e-5\n", encoding="utf-8")
    prof = load_profile(path, notebooks_dir=nb_dir)
    # PyYAML alone reads 3e-5 as the string "3e-5"; the loader makes it a float.
    assert prof.name == "elsewhere" and prof.parameters_for("01_alpha")[0]["lr"] == 3e-5


def test_unknown_parameter_is_an_error_naming_notebook_key_and_declared_keys(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "typo", """
        notebooks:
          02_beta:
            modalty: music
    """)
    prof = load_profile("typo", params_dir=params_dir, notebooks_dir=nb_dir)
    with pytest.raises(ProfileError) as err:
        prof.parameters_for("02_beta")
    msg = str(err.value)
    assert "02_beta" in msg and "'modalty'" in msg and "declares: profile, modality, out_dir" in msg
    with pytest.raises(ProfileError, match="modalty"):
        prof.check()


def test_unknown_key_in_a_run_and_wrong_type_are_errors(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "bad", """
        notebooks:
          01_alpha:
            n_items: "ten"
          02_beta:
            runs:
              - {modality: music, epochs: 2}
    """)
    prof = load_profile("bad", params_dir=params_dir, notebooks_dir=nb_dir)
    with pytest.raises(ProfileError) as err:
        prof.parameters_for("01_alpha")
    assert "'n_items'" in str(err.value) and "expected int" in str(err.value)
    with pytest.raises(ProfileError) as err:
        prof.parameters_for("02_beta")
    assert "'epochs'" in str(err.value) and "runs[0]" in str(err.value)
    errors = prof.errors()
    assert len(errors) == 2  # check() reports every problem at once


def test_defaults_key_declared_by_no_notebook_is_an_error(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "d", "defaults:\n  n_itmes: 5\n")
    prof = load_profile("d", params_dir=params_dir, notebooks_dir=nb_dir)
    with pytest.raises(ProfileError, match="'n_itmes' is declared by no notebook"):
        prof.check()


@pytest.mark.parametrize("text, expect", [
    ("defaults:\n  profile: other\n", "set automatically"),
    ("notebooks:\n  02_beta:\n    profile: other\n", "set automatically"),
    ("notebooks:\n  01_alpha:\n    api_key: sk-abc\n", "looks like a secret"),
    ("notebooks:\n  01_alpha:\n    tag: sk-ABCDEFGHIJKLMNOPQRSTUVWX\n", "looks like a secret"),
    ("defaults:\n  hf_token: x\n", "looks like a secret"),
    ("notebooks:\n  09_missing:\n    a: 1\n", "no notebook 09_missing.ipynb"),
])
def test_profile_name_secrets_and_missing_notebooks_are_refused(dirs, text, expect):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "p", text)
    prof = load_profile("p", params_dir=params_dir, notebooks_dir=nb_dir)
    with pytest.raises(ProfileError, match=expect):
        prof.check()


@pytest.mark.parametrize("text, expect", [
    ("notebook:\n  01_alpha: {}\n", "unknown top-level key"),
    ("defaults: [1, 2]\n", "must be a mapping"),
    ("notebooks:\n  01_alpha:\n    runs: {modality: x}\n", "must be a list of mappings"),
    ("defaults:\n  a: 1\n  a: 2\n", "duplicate key 'a'"),
    ("defaults: {a: [1\n", "invalid YAML"),
    ("notebooks:\n  4: {}\n", "notebook stem"),
])
def test_profile_structure_errors(dirs, text, expect):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "s", text)
    with pytest.raises(ProfileError, match=expect):
        load_profile("s", params_dir=params_dir, notebooks_dir=nb_dir)


def test_missing_profile_lists_available(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "demo", "{}\n")
    with pytest.raises(ProfileError, match=r"'nope' not found .*available: demo"):
        load_profile("nope", params_dir=params_dir, notebooks_dir=nb_dir)


def test_extends_merges_parameters_and_replaces_runs(dirs):
    nb_dir, params_dir = dirs
    write_profile(params_dir, "base", """
        defaults: {out_dir: /base}
        notebooks:
          01_alpha: {n_items: 5, lr: 0.1}
          02_beta:
            runs: [{modality: sound}, {modality: music}]
    """)
    write_profile(params_dir, "child", """
        extends: base
        notebooks:
          01_alpha: {lr: 0.2}
          02_beta:
            runs: []
    """)
    prof = load_profile("child", params_dir=params_dir, notebooks_dir=nb_dir)
    assert prof.parameters_for("01_alpha") == [{"out_dir": "/base", "n_items": 5, "lr": 0.2, "profile": "child"}]
    assert prof.parameters_for("02_beta") == []  # an empty runs list skips the notebook
    write_profile(params_dir, "base", "extends: child\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile("child", params_dir=params_dir, notebooks_dir=nb_dir)


def test_discover_notebooks_only_numbered_in_order(tmp_path):
    for name in ("10_z.ipynb", "02_b.ipynb", "scratch.ipynb", "01_a.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in discover_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_z.ipynb"]


def test_broken_notebook_blocks_only_its_own_runs(dirs):
    nb_dir, params_dir = dirs
    make_notebook(nb_dir / "03_broken.ipynb", ("x = compute()", ["parameters"]))
    write_profile(params_dir, "p", "notebooks:\n  01_alpha: {n_items: 2}\n")
    prof = load_profile("p", params_dir=params_dir, notebooks_dir=nb_dir)
    assert prof.errors(["01_alpha"]) == []  # e.g. rlalm reproduce --only 01 while 03 is being edited
    (err,) = prof.errors()
    assert "03_broken.ipynb" in err and "line 1" in err


def test_papermill_inspection_agrees_where_it_sees_a_parameter_and_misses_optional_ones():
    """Why parse_parameters_source is ours: papermill's own inspection drops ``X | None`` parameters.
    Where papermill does see a parameter (``papermill --help-notebook``), name, annotation, default
    and help text agree with ours. When a papermill release reads the optional ones too, the last
    assertion fails: then inspection can be built on papermill's."""
    import ast

    import papermill

    from reliable_lalm import paths

    nb = paths.NOTEBOOKS_DIR / "04_sft.ipynb"
    ours = notebook_parameters(nb)
    theirs = papermill.inspect_notebook(str(nb))
    assert theirs and set(theirs) <= set(ours)
    for name, seen in theirs.items():
        assert seen["inferred_type_name"] == ours[name].type_name, name
        assert ast.literal_eval(seen["default"]) == ours[name].default, name
        assert seen["help"] == ours[name].comment, name
    optional = sorted(n for n, p in ours.items() if "None" in p.type_name)
    assert len(optional) >= 4 and sorted(set(ours) - set(theirs)) == optional


def test_the_shared_parameters_are_experiment_fields_with_the_same_defaults():
    """``start_notebook`` builds the Experiment from the shared parameters by name; a default that
    differed between the model and Experiment would make a notebook and a library call disagree."""
    import dataclasses

    from reliable_lalm.experiments import Experiment
    from reliable_lalm.runner.schema import BaseParameters

    fields = {f.name: f.default for f in dataclasses.fields(Experiment)}
    assert {name: fields.get(name, "missing") for name in BaseParameters.model_fields} == \
        {name: f.default for name, f in BaseParameters.model_fields.items()}


def test_the_demo_profile_is_the_models_defaults():
    """The demo profile restates nothing: each notebook's model defaults are its parameters (04 runs
    once per modality), so a default is changed in one place, the model."""
    from reliable_lalm.runner.outputs import profile_parameter_sets
    from reliable_lalm.runner.schema import SCHEMAS, declarations

    assert load_profile("demo").defaults == {}
    for stem, model in SCHEMAS.items():
        defaults = {k: p.default for k, p in declarations(model).items()}
        sets = profile_parameter_sets("demo", stem)
        expected = [{**defaults, "modality": m} for m in ("sound", "music", "speech")] if stem == "04_sft" else [defaults]
        assert sets == expected, stem
