"""Issue 16: output routing, the committed-results check, shipped adapters, numerics provenance,
and evaluation that gives identical tables under another CPU capability."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reliable_lalm import paths
from reliable_lalm.runner import outputs
from reliable_lalm.runner.profiles import ProfileError, notebook_parameters
from reliable_lalm.runner.schema import SCHEMAS, declarations


def defaults(stem: str) -> dict:
    return {k: p.default for k, p in declarations(SCHEMAS[stem]).items()}


# ------------------------------------------------------------------ output routing

def test_routing_defaults_are_the_models_not_the_notebook_on_disk(tmp_path):
    """A parameters cell edited in JupyterLab is a parameter change: the edited default routes the
    run away from the committed folders, because the profile's parameters come from the model."""
    assert outputs.canonical_declarations("02_idk_prompting") == declarations(SCHEMAS["02_idk_prompting"])
    for nb in sorted(paths.NOTEBOOKS_DIR.glob("0*.ipynb")):
        assert notebook_parameters(nb) == declarations(SCHEMAS[nb.stem]), nb.name
    edited = {**defaults("02_idk_prompting"), "bootstrap": 10}  # as if the cell said bootstrap: int = 10
    assert outputs.output_location("demo", "02_idk_prompting", edited).tag != "demo"


@pytest.mark.parametrize("modality", ["sound", "music", "speech"])
def test_profile_parameters_write_to_the_profile_folder(modality):
    loc = outputs.output_location("demo", "04_sft", {**defaults("04_sft"), "modality": modality})
    assert loc.is_profile and loc.tag == "demo" and loc.tables == paths.tables_dir("demo")


def test_other_parameters_write_beside_with_a_hash():
    user = outputs.output_location("demo", "02_idk_prompting", {**defaults("02_idk_prompting"), "benchmark": "my.json"})
    assert not user.is_profile and user.tag.startswith("demo+") and len(user.tag) == len("demo+") + 8
    assert user.differs == {"benchmark": {"profile": "synthetic", "run": "my.json"}}
    # The hash is of what differs: every notebook of one user run shares the folder.
    other = outputs.output_location("demo", "01_baselines", {**defaults("01_baselines"), "benchmark": "my.json"})
    assert other.tag == user.tag
    assert outputs.output_location("demo", "02_idk_prompting",
                                   {**defaults("02_idk_prompting"), "benchmark": "b.json"}).tag != user.tag
    # ci = demo + limit_per_task 12, bootstrap 200: the demo defaults are not the ci parameters.
    assert outputs.output_location("ci", "02_idk_prompting", {**defaults("02_idk_prompting"), "profile": "ci"}).tag != "ci"
    ci = {**defaults("02_idk_prompting"), "profile": "ci", "limit_per_task": 12, "bootstrap": 200}
    assert outputs.output_location("ci", "02_idk_prompting", ci).tag == "ci"
    assert outputs.output_location("nosuchprofile", "02_idk_prompting", ci).tag.startswith("nosuchprofile+")
    # A float where the profile has an int is another parameter set (never the committed folder).
    assert outputs.output_location("demo", "02_idk_prompting",
                                   {**defaults("02_idk_prompting"), "bootstrap": 1000.5}).tag != "demo"


def test_notebook_setup_refuses_unknown_injected_parameters(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "TABLES_DIR", tmp_path / "tables")
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    params = defaults("02_idk_prompting")
    history = ["", "profile: str = 'demo'", '# Parameters\nnonexistent = 3\n']
    with pytest.raises(ProfileError, match="unknown parameter 'nonexistent'"):
        outputs.notebook_setup("02_idk_prompting", {**params, "nonexistent": 3}, history=history, quiet=True)
    renamed = ["", '# Parameters\nknn_samples = 3\n']
    with pytest.raises(ProfileError, match=r"unknown parameter 'knn_samples' \(renamed k_at_n_samples\)"):
        outputs.notebook_setup("04_sft", {**defaults("04_sft"), "knn_samples": 3}, history=renamed, quiet=True)
    with pytest.raises(ProfileError, match="'bootstrap'"):
        outputs.notebook_setup("02_idk_prompting", {**params, "bootstrap": "many"},
                               history=['# Parameters\nbootstrap = "many"\n'], quiet=True)
    loc = outputs.notebook_setup("02_idk_prompting", {**params, "benchmark": "my.json"},
                                 history=['# Parameters\nbenchmark = "my.json"\n'], quiet=True)
    record = json.loads((tmp_path / "tables" / loc.tag / "parameters.json").read_text())
    assert record["differs_from_profile"] == {"benchmark": {"profile": "synthetic", "run": "my.json"}}
    assert record["notebooks"]["02_idk_prompting"]["benchmark"] == "my.json"
    assert (tmp_path / "figures" / loc.tag / "parameters.json").is_file()
    same = outputs.notebook_setup("02_idk_prompting", dict(params), history=[], quiet=True)
    assert same.tag == "demo" and not (tmp_path / "tables" / "demo").exists()  # nothing written for the profile


def test_notebook_setup_refuses_a_secret_parameter_without_echoing_it():
    params = defaults("02_idk_prompting")
    with pytest.raises(ProfileError, match="openai_api_key.*secret") as err:
        outputs.notebook_setup("02_idk_prompting", {**params, "openai_api_key": "sk-test-123"},
                               history=['# Parameters\nopenai_api_key = "sk-test-123"\n'], quiet=True)
    assert "sk-test-123" not in str(err.value)


def test_p_profile_name_applies_that_profiles_parameters():
    """``papermill nb out -p profile ci`` runs with the ci profile's parameters, not the demo defaults."""
    namespace = {**defaults("02_idk_prompting"), "profile": "ci"}
    loc = outputs.notebook_setup("02_idk_prompting", namespace, history=['# Parameters\nprofile = "ci"\n'],
                                 quiet=True)
    assert loc.tag == "ci" and namespace["limit_per_task"] == 12 and namespace["bootstrap"] == 200
    # an explicit -p still wins over the profile (and then the outputs are not the profile's)
    namespace = {**defaults("02_idk_prompting"), "profile": "ci", "bootstrap": 50}
    loc = outputs.notebook_setup("02_idk_prompting", namespace,
                                 history=['# Parameters\nprofile = "ci"\nbootstrap = 50\n'], quiet=True)
    assert namespace["bootstrap"] == 50 and namespace["limit_per_task"] == 12 and loc.tag.startswith("ci+")


def test_a_profile_file_given_with_f_is_read_as_that_profile():
    """``papermill nb out -f params/ci.yaml`` injects the file's top-level keys; they name the profile."""
    import yaml

    raw = yaml.safe_load((paths.PARAMS_DIR / "ci.yaml").read_text())
    namespace = {**defaults("07_lora_alpha_ablation"), **raw}
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in raw.items())
    loc = outputs.notebook_setup("07_lora_alpha_ablation", namespace, history=[source], quiet=True)
    assert loc.tag == "ci" and namespace["profile"] == "ci" and list(namespace["alphas"]) == [4, 64]
    assert not any(k in namespace for k in ("description", "extends", "defaults", "notebooks"))


def test_reproduce_plan_routes_runs_like_the_notebooks():
    from reliable_lalm.runner.profiles import load_profile
    from reliable_lalm.runner.reproduce import build_plan

    plan = build_plan(load_profile("demo"))
    assert {r.output.parent for r in plan} == {paths.runs_dir("demo")}


# ------------------------------------------------------------------ --check

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_check_names_files_and_cells(tmp_path):
    from reliable_lalm.runner.check import check_outputs

    root = tmp_path
    (root / "tables/demo").mkdir(parents=True)
    (root / "figures/demo").mkdir(parents=True)
    (root / "tables/demo/t.csv").write_text(",Acc%,Rel%\nbaseline,48.8300,48.8300\nlora,17.8300,35.7500\n")
    (root / "tables/demo/t.md").write_text("| a |\n")
    (root / "figures/demo/f.png").write_bytes(b"\x89PNG-bytes")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    result = check_outputs("demo", root=root)
    assert result.ok and result.verdict() == "check: 3 files identical to HEAD (tables/demo/, figures/demo/)"

    (root / "tables/demo/t.csv").write_text(",Acc%,Rel%\nbaseline,48.8300,48.8300\nlora,17.8300,34.8000\n")
    (root / "figures/demo/f.png").write_bytes(b"\x89PNG-other")
    (root / "tables/demo/t.md").unlink()
    (root / "tables/demo/new.csv").write_text("x\n")
    result = check_outputs("demo", root=root)
    assert not result.ok
    by_path = {d.path: d for d in result.differences}
    assert by_path["tables/demo/t.csv"].details == ["lora | Rel%: 35.7500 -> 34.8000"]
    assert by_path["figures/demo/f.png"].details[0].startswith("bytes differ")
    assert by_path["tables/demo/t.md"].kind.startswith("missing")
    assert by_path["tables/demo/new.csv"].kind.startswith("not committed")
    assert "3 of 4 files differ" in result.verdict() or "4 of" in result.verdict()


def test_check_compares_numbers_and_figures_at_the_printed_precision(tmp_path):
    """A far digit moved by another CPU's kernels may flip the last printed digit of a value at a
    rounding boundary, and moves a figure's coordinates: the check passes on the data, not the bytes.
    A change of two units, a count off by one, or a figure whose data changed still fail."""
    from reliable_lalm.runner.check import check_outputs

    root = tmp_path
    (root / "tables/demo").mkdir(parents=True)
    (root / "figures/demo").mkdir(parents=True)
    (root / "tables/demo/t.csv").write_text(",n,Acc%\nbaseline,600,48.8300\n")
    (root / "tables/demo/t.md").write_text("| Method | n | Acc% |\n| baseline | 600 | 48.83 |\n")
    (root / "figures/demo/f.csv").write_text("confidence,bin,mean_confidence\noption prob,0,0.4125\n")
    (root / "figures/demo/f.pdf").write_bytes(b"%PDF 0.41251234")
    (root / "figures/demo/g.pdf").write_bytes(b"%PDF no data beside it")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")

    (root / "tables/demo/t.csv").write_text(",n,Acc%\nbaseline,600,48.8301\n")
    (root / "tables/demo/t.md").write_text("| Method | n | Acc% |\n| baseline | 600 | 48.84 |\n")
    (root / "figures/demo/f.csv").write_text("confidence,bin,mean_confidence\noption prob,0,0.4124\n")
    (root / "figures/demo/f.pdf").write_bytes(b"%PDF 0.41249876")
    result = check_outputs("demo", root=root)
    assert result.ok, result.verdict()
    assert result.identical == ["figures/demo/g.pdf"]
    assert set(result.equal_at_precision) == {"tables/demo/t.csv", "tables/demo/t.md", "figures/demo/f.csv",
                                              "figures/demo/f.pdf"}
    assert "5 files equal to HEAD" in result.verdict() and "image bytes differ" in result.verdict()

    (root / "tables/demo/t.csv").write_text(",n,Acc%\nbaseline,601,48.8300\n")        # a count
    (root / "tables/demo/t.md").write_text("| Method | n | Acc% |\n| baseline | 600 | 48.85 |\n")  # two units
    (root / "figures/demo/f.csv").write_text("confidence,bin,mean_confidence\noption prob,0,0.4127\n")
    (root / "figures/demo/g.pdf").write_bytes(b"%PDF other")
    result = check_outputs("demo", root=root)
    assert not result.ok
    assert {d.path for d in result.differences} == {"tables/demo/t.csv", "tables/demo/t.md", "figures/demo/f.csv",
                                                    "figures/demo/f.pdf", "figures/demo/g.pdf"}


# ------------------------------------------------------------------ provenance

def test_numerics_provenance(tmp_path, monkeypatch):
    from reliable_lalm.core import numerics
    from reliable_lalm.core.results import device_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
                       "model name\t: Intel(R) Xeon(R) Platinum\nstepping\t: 7\nflags\t\t: fpu sse4_2 avx avx2 avx512f\n\n"
                       "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    cpu = numerics.cpu_description(str(cpuinfo))
    assert cpu["cpu_vendor"] == "GenuineIntel" and cpu["cpu_model"] == "Intel(R) Xeon(R) Platinum"
    assert cpu["cpu_flags"] == ["sse4_2", "avx", "avx2", "avx512f"]
    env = numerics.numerics_environment({"MKL_CBWR": "COMPATIBLE", "ONEDNN_VERBOSE": "0", "HOME": "/root",
                                         "ATEN_CPU_CAPABILITY": "avx2"})
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_VERBOSE": "0"}
    import torch  # noqa: F401 - described only when imported

    info = device_description()["numerics"]
    assert info["cpu_capability"] and info["num_threads"] >= 1 and "mkl_version" in info and "env" in info


# ------------------------------------------------------------------ shipped adapters

def test_shipped_adapters_are_small_complete_and_checked(tmp_path):
    import shutil

    from reliable_lalm.experiments import shipped

    manifest = shipped.read_manifest()
    names = set(manifest["adapters"])
    assert {"sound-a32", "music-a32", "speech-a16", "speech-a4", "speech-a64"} <= names
    total = sum(p.stat().st_size for p in shipped.SHIPPED_DIR.rglob("*") if p.is_file())
    assert total < 2 * 2**20
    for name, entry in manifest["adapters"].items():
        assert shipped.find_shipped(entry["training_key"]) == shipped.SHIPPED_DIR / name
        assert entry["base_model_sha256"] == shipped.model_content_digest(paths.DEMO_MODEL_DIR)
        # No path of the machine that trained it: the base is named by its registry name.
        config = json.loads((shipped.SHIPPED_DIR / name / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "demo", config["base_model_name_or_path"]
    # A modified file is never used.
    copy = tmp_path / "adapters"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    entry = manifest["adapters"]["sound-a32"]
    with open(copy / "sound-a32" / "adapter_model.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\1")
    assert shipped.find_shipped(entry["training_key"], copy) is None


def test_training_key_depends_on_what_the_weights_depend_on():
    from reliable_lalm.experiments.shipped import training_key
    from reliable_lalm.training.sft_data import SFTExample

    import numpy as np

    ex = [SFTExample(audio=np.zeros(4, np.float32), prompt="q", target="A", item_id="1")]
    base = dict(model_digest="m", examples=ex, sft={"seed": 0, "alpha": 32.0}, train_prompt="baseline", deepspeed=None)
    key = training_key(**base)
    assert key == training_key(**{**base, "examples": [SFTExample(audio=np.ones(4, np.float32), prompt="q",
                                                                     target="A", item_id="1")]})
    assert key != training_key(**{**base, "sft": {"seed": 1, "alpha": 32.0}})
    assert key != training_key(**{**base, "model_digest": "other"})
    assert key != training_key(**{**base, "examples": [SFTExample(audio=ex[0].audio, prompt="q", target="IDK",
                                                                     item_id="1")]})


def test_retrain_tolerance_rule():
    from reliable_lalm.runner.retrain import judge

    ok = judge(24.0, [24.5, 23.0, 25.0, 24.0, 24.5], n=200)
    assert ok["ok"] and abs(ok["mean"] - 24.2) < 1e-9
    assert not judge(40.0, [24.5, 23.0, 25.0, 24.0, 24.5], n=200)["ok"]
    assert judge(24.5, [24.0, 24.0], n=200)["ok"]  # sd 0: one item (0.5 %) of slack


# ------------------------------------------------------------------ evaluation under another CPU capability

EVAL_SCRIPT = textwrap.dedent('''
    import sys
    from reliable_lalm import paths
    from reliable_lalm.experiments import Experiment
    from reliable_lalm.experiments.crossmodal import CrossModal, CrossModalConfig
    from reliable_lalm.experiments.shipped import SHIPPED_DIR
    from reliable_lalm.reporting.tables import _csv
    import torch, pandas as pd
    exp = Experiment(profile="ci", limit_per_task=6, bootstrap=0)
    config = CrossModalConfig(base_model=str(paths.DEMO_MODEL_DIR), k_at_n_store="unused", cache_dir=sys.argv[1],
                              n_boot=0, progress=False)
    adapters = {("sound", 32.0): str(SHIPPED_DIR / "sound-a32"), ("speech", 16.0): str(SHIPPED_DIR / "speech-a16")}
    cm = CrossModal(config, eval_items=exp.items, adapters=adapters)
    rows = cm.run_cell("sound", ["sound", "music", "speech"]) + cm.run_cell("speech", ["sound", "music", "speech"])
    frame = pd.DataFrame(rows)
    print("CAPABILITY", torch.backends.cpu.get_cpu_capability())
    # Every cell, the in-domain train = test ones included (Tables 10-11 leave those out).
    print(_csv(frame[["train", "test", "acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi"]]))
''')


@pytest.mark.slow
def test_shipped_adapter_evaluation_is_identical_under_default_cpu_capability(tmp_path):
    def run(capability: str | None, cache: Path) -> tuple[str, str]:
        env = {**os.environ, "PYTHONPATH": str(paths.PACKAGE_DIR.parent)}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        done = subprocess.run([sys.executable, "-c", EVAL_SCRIPT, str(cache)], env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        head, _, tables = done.stdout.partition("\n")
        return head.split()[-1], tables

    native_cap, native = run(None, tmp_path / "native")
    default_cap, portable = run("default", tmp_path / "default")
    assert default_cap == "DEFAULT" and native_cap != "DEFAULT"
    assert "sound" in native and native == portable


STUDY_SCRIPT = textwrap.dedent('''
    import sys

    import matplotlib
    matplotlib.use("Agg")
    import torch

    from reliable_lalm import reporting
    from reliable_lalm.experiments import Experiment
    from reliable_lalm.experiments.abstention import AbstentionStudy

    out = sys.argv[1]
    exp = Experiment(profile="ci", limit_per_task=8, bootstrap=0)
    study = AbstentionStudy(exp, k_at_n_samples=3, progress=False)
    for name, table in {"risk_coverage": study.risk_coverage_table(), "calibration": study.calibration_table(),
                        "confidence_targets": study.confidence_target_table()}.items():
        reporting.save_table(table, name, "x", caption="c", out_dir=out)
    reporting.save_figure(reporting.risk_coverage_figure(study.curves()), "risk_coverage_figure", "x",
                          data=study.risk_coverage_data(), out_dir=out)
    reporting.save_figure(reporting.reliability_figure(study.calibrations()), "reliability_figure", "x",
                          data=study.reliability_data(), out_dir=out)
    print("CAPABILITY", torch.backends.cpu.get_cpu_capability())
''')


@pytest.mark.slow
def test_notebook_08_outputs_pass_the_check_under_default_cpu_capability(tmp_path):
    """Option log-likelihoods are float32 forward passes: another CPU's kernels move them in the
    sixth digit. Notebook 08's tables and its figures' data must still agree at the printed
    precision (what ``rlalm reproduce --check`` compares), run in fresh caches under the native
    dispatch and under ``ATEN_CPU_CAPABILITY=default``."""
    from reliable_lalm.runner.check import numbers_within_printed_precision

    def run(capability: str | None, name: str) -> tuple[str, Path]:
        env = {**os.environ, "PYTHONPATH": str(paths.PACKAGE_DIR.parent), "RLALM_CACHE_DIR": str(tmp_path / name / "cache")}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        out = tmp_path / name / "out"
        done = subprocess.run([sys.executable, "-c", STUDY_SCRIPT, str(out)], env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.split("CAPABILITY")[-1].strip(), out

    native_cap, native = run(None, "native")
    default_cap, portable = run("default", "default")
    assert default_cap == "DEFAULT" and native_cap != "DEFAULT"
    names = sorted(p.name for p in native.iterdir())
    assert names == sorted(p.name for p in portable.iterdir()) and "reliability_figure.csv" in names
    for name in names:
        if name.endswith((".csv", ".md", ".tex")):
            old, new = (native / name).read_bytes(), (portable / name).read_bytes()
            assert old == new or numbers_within_printed_precision(old, new)[0], name


# ------------------------------------------------------------------ papermill, as the README shows

def _status(*folders: str) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", *folders], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.notebooks
def test_papermill_with_other_parameters_leaves_committed_folders_alone(tmp_path):
    import shutil

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    before = _status("tables", "figures")
    nb = str(paths.NOTEBOOKS_DIR / "02_idk_prompting.ipynb")
    with pytest.raises(PapermillExecutionError, match="unknown parameter 'nonexistent'"):
        pm.execute_notebook(nb, str(tmp_path / "bad.ipynb"), parameters={"nonexistent": 3},
                            cwd=str(paths.REPO_ROOT), progress_bar=False)
    params = {"limit_per_task": 3, "bootstrap": 0}
    loc = outputs.output_location("demo", "02_idk_prompting", {**defaults("02_idk_prompting"), **params})
    try:
        pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), parameters=params, cwd=str(paths.REPO_ROOT),
                            progress_bar=False)
        assert (loc.tables / "table3.csv").is_file() and (loc.tables / "parameters.json").is_file()
        assert _status("tables", "figures") == before  # nothing committed changed; demo+<hash>/ is ignored
    finally:
        shutil.rmtree(loc.tables, ignore_errors=True)
        shutil.rmtree(loc.figures, ignore_errors=True)
