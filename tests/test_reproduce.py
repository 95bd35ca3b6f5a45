"""``rlalm reproduce``: planning, validation before execution, papermill runs, failures, report."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from reliable_lalm import paths
from reliable_lalm.cli import main
from reliable_lalm.runner.profiles import ProfileError, load_profile
from reliable_lalm.runner.reproduce import NotebookFailed, build_plan, execute_notebook, output_name, select_notebooks

FIXTURES = Path(__file__).parent / "nb_fixtures"


def setup_dirs(tmp_path: Path, notebooks: dict[str, str], profile_text: str) -> dict[str, Path]:
    """Copy fixture notebooks (fixture name -> name in the tmp notebooks dir) and write params/fake.yaml."""
    d = {name: tmp_path / name for name in ("notebooks", "params", "runs", "out")}
    for path in d.values():
        path.mkdir()
    for src, dst in notebooks.items():
        shutil.copy(FIXTURES / src, d["notebooks"] / dst)
    (d["params"] / "fake.yaml").write_text(textwrap.dedent(profile_text).replace("OUT", str(d["out"])),
                                           encoding="utf-8")
    return d


def cli_args(d: dict[str, Path], *extra: str) -> list[str]:
    return ["reproduce", "--profile", "fake", "--params-dir", str(d["params"]), "--notebooks-dir",
            str(d["notebooks"]), "--runs-dir", str(d["runs"]), *extra]


GOOD_PROFILE = """
    defaults:
      out_dir: OUT
    notebooks:
      01_alpha:
        n_items: 7
        lr: 1
        sizes: [3, 4, 5]
      02_beta:
        runs:
          - {modality: music}
          - {modality: speech}
"""


def test_output_name_encodes_the_run_parameters():
    assert output_name("04_sft", {}) == "04_sft.ipynb"
    assert output_name("04_sft", {"modality": "music"}) == "04_sft__modality-music.ipynb"
    assert output_name("07_x", {"lora_alpha": 16, "modality": "speech", "profile": "demo"}) == \
        "07_x__lora_alpha-16__modality-speech.ipynb"
    assert output_name("07_x", {"alphas": [1, 2.5], "flag": True, "tag": None, "p": "a/b c"}) == \
        "07_x__alphas-1+2.5__flag-true__tag-none__p-a_b_c.ipynb"
    long = output_name("07_x", {"v": "x" * 500})
    assert len(long) < 160 and long != output_name("07_x", {"v": "x" * 499})


def test_select_notebooks_by_number_or_stem():
    stems = ["01_baselines", "02_idk_prompting", "04_sft", "10_extra"]
    assert select_notebooks(stems, "04,1") == ["01_baselines", "04_sft"]
    assert select_notebooks(stems, "02_idk_prompting") == ["02_idk_prompting"]
    assert select_notebooks(stems, None) == stems
    with pytest.raises(ProfileError, match="'05' matches no notebook"):
        select_notebooks(stems, "05")


def test_list_prints_the_plan_without_running(tmp_path, capsys):
    d = setup_dirs(tmp_path, {"01_alpha.ipynb": "01_alpha.ipynb", "02_beta.ipynb": "02_beta.ipynb"}, GOOD_PROFILE)
    assert main(cli_args(d, "--list")) == 0
    out = capsys.readouterr().out
    assert "3 execution(s)" in out and "02_beta__modality-speech.ipynb" in out and "sizes=(3, 4, 5)" in out
    assert not any(d["runs"].iterdir())


def test_invalid_profile_is_rejected_before_anything_runs(tmp_path, capsys):
    # The error is in the *second* notebook; the first must not have run either.
    d = setup_dirs(tmp_path, {"01_alpha.ipynb": "01_alpha.ipynb", "02_beta.ipynb": "02_beta.ipynb"}, """
        notebooks:
          02_beta:
            runs: [{modality: music, api_key: sk-123}, {modalty: speech}]
    """)
    assert main(cli_args(d)) == 2
    err = capsys.readouterr().err
    assert "nothing was executed" in err and "'api_key'" in err and "looks like a secret" in err
    assert "'modalty'" in err and "02_beta" in err
    assert not any(d["runs"].rglob("*"))


def test_duplicate_output_names_are_rejected(tmp_path):
    d = setup_dirs(tmp_path, {"02_beta.ipynb": "02_beta.ipynb"}, """
        notebooks:
          02_beta:
            runs: [{modality: music}, {modality: music}]
    """)
    prof = load_profile("fake", params_dir=d["params"], notebooks_dir=d["notebooks"])
    with pytest.raises(ProfileError, match="two runs write 02_beta__modality-music.ipynb"):
        build_plan(prof, runs_root=d["runs"])


def test_default_locations_come_from_paths(tmp_path):
    # Without injected directories the plan writes into runs/<profile>/ of the repository.
    d = setup_dirs(tmp_path, {"02_beta.ipynb": "02_beta.ipynb"}, "{}\n")
    prof = load_profile("fake", params_dir=d["params"], notebooks_dir=d["notebooks"])
    assert [r.output for r in build_plan(prof)] == [paths.runs_dir("fake") / "02_beta.ipynb"]


def _cell_outputs_text(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("text/plain", out.get("text", ""))
            texts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(texts)


@pytest.mark.notebooks
def test_reproduce_executes_notebooks_with_injected_parameters(tmp_path, capsys):
    d = setup_dirs(tmp_path, {"01_alpha.ipynb": "01_alpha.ipynb", "02_beta.ipynb": "02_beta.ipynb"}, GOOD_PROFILE)
    assert main(cli_args(d)) == 0
    err = capsys.readouterr().err
    assert "[1/3] 01_alpha: ok in" in err and "[3/3] 02_beta__modality-speech: ok in" in err

    run_dir = d["runs"] / "fake"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "01_alpha.ipynb", "02_beta__modality-music.ipynb", "02_beta__modality-speech.ipynb", "reproduce.json"]

    # What the kernel saw: profile name, converted types (a real tuple), the repository root as cwd.
    record = json.loads((d["out"] / "a_7.json").read_text())
    assert record == {"profile": "fake", "n_items": 7, "lr": 1.0, "tag": None, "sizes": [3, 4, 5],
                      "sizes_type": "tuple", "cwd": str(paths.REPO_ROOT)}
    assert json.loads((d["out"] / "b_music.json").read_text()) == {"profile": "fake", "modality": "music"}
    assert json.loads((d["out"] / "b_speech.json").read_text()) == {"profile": "fake", "modality": "speech"}
    nb = json.loads((run_dir / "02_beta__modality-music.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "modality = \"music\"" in "".join(injected[0]["source"])
    assert "'sizes_type': 'tuple'" in _cell_outputs_text(run_dir / "01_alpha.ipynb")

    report = json.loads((run_dir / "reproduce.json").read_text())
    assert report["status"] == "ok" and report["profile"] == "fake"
    assert [(e["notebook"], Path(e["output"]).name, e["status"]) for e in report["notebooks"]] == [
        ("01_alpha", "01_alpha.ipynb", "ok"), ("02_beta", "02_beta__modality-music.ipynb", "ok"),
        ("02_beta", "02_beta__modality-speech.ipynb", "ok")]
    assert all(e["seconds"] > 0 and e["error"] is None for e in report["notebooks"])
    assert report["notebooks"][1]["parameters"] == {"out_dir": str(d["out"]), "modality": "music", "profile": "fake"}

    # --only reruns one notebook and keeps the other entries of the report.
    assert main(cli_args(d, "--only", "2")) == 0
    report = json.loads((run_dir / "reproduce.json").read_text())
    assert len(report["notebooks"]) == 3 and report["only"] == "2"


@pytest.mark.notebooks
def test_failing_notebook_exits_nonzero_naming_notebook_and_cell(tmp_path, capsys):
    d = setup_dirs(tmp_path, {"01_alpha.ipynb": "01_alpha.ipynb", "03_fails.ipynb": "02_fails.ipynb",
                              "02_beta.ipynb": "03_beta.ipynb"}, "defaults: {}\n")
    assert main(cli_args(d)) == 1
    err = capsys.readouterr().err
    assert "REPRODUCE FAILED" in err
    # Cell 3 of the source notebook (0-based; markdown counts), not papermill's shifted index 4.
    assert "notebook 02_fails failed in cell 3" in err
    assert "ValueError: fixture failure on purpose" in err and "if fail:" in err

    report = json.loads((d["runs"] / "fake" / "reproduce.json").read_text())
    assert report["status"] == "failed"
    by_name = {e["notebook"]: e for e in report["notebooks"]}
    assert by_name["01_alpha"]["status"] == "ok"
    assert by_name["02_fails"]["status"] == "failed"
    assert by_name["02_fails"]["error"]["cell_index"] == 3
    assert by_name["02_fails"]["error"]["ename"] == "ValueError"
    assert by_name["03_beta"]["status"] == "skipped"  # later notebooks may need the failed one's results
    assert not (d["runs"] / "fake" / "03_beta.ipynb").exists()


@pytest.mark.notebooks
def test_execute_notebook_direct(tmp_path):
    d = setup_dirs(tmp_path, {"02_beta.ipynb": "02_beta.ipynb", "03_fails.ipynb": "03_fails.ipynb"}, "{}\n")
    out = execute_notebook("02_beta", "fake", {"modality": "music", "out_dir": str(d["out"])},
                           notebooks_dir=d["notebooks"], runs_root=d["runs"], params_dir=d["params"],
                           name_params={"modality": "music"})
    # Not the profile's parameters (fake.yaml sets none): runs/fake+<hash>/, never runs/fake/.
    assert out.parent.parent == d["runs"] and out.parent.name.startswith("fake+") and out.is_file()
    assert out.name == "02_beta__modality-music.ipynb"
    assert json.loads((d["out"] / "b_music.json").read_text())["profile"] == "fake"
    with pytest.raises(ProfileError, match="'epochs'"):
        execute_notebook("02_beta", "fake", {"epochs": 1}, notebooks_dir=d["notebooks"], runs_root=d["runs"])
    with pytest.raises(NotebookFailed) as failed:
        execute_notebook("03_fails", "fake", {"fail": True}, notebooks_dir=d["notebooks"], runs_root=d["runs"])
    e = failed.value
    assert (e.notebook, e.cell_index, e.ename, e.evalue) == ("03_fails", 3, "ValueError", "fixture failure on purpose")
    assert e.output.name == "03_fails__fail-true.ipynb" and e.output.is_file()  # kept for the traceback
