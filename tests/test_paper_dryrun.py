"""The paper profile's code path on CPU (issue 17 item 1): ``rlalm reproduce --profile paper-dryrun``
runs all nine notebook executions with the paper profile's settings, substituting only the model
(random weights in the 7B layout), MMAU's audio (generated for the real metadata), the LLM endpoint
(a local OpenAI-compatible judge) and the device. Skips where ../shared/mmau/ is absent."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from reliable_lalm import paths
from reliable_lalm.runner.profiles import load_profile

SUBSTITUTED = {"model", "benchmark", "audio_dir", "device"}
metadata = pytest.mark.skipif(
    not (paths.SHARED_DIR / "mmau" / "mmau-test-mini.2025-03-25.json").is_file(),
    reason="MMAU test-mini metadata not in ../shared/mmau/ (RLALM_SHARED_DIR)")


def test_dryrun_profile_is_the_paper_profile_but_for_the_substituted_keys():
    paper, dry = load_profile("paper"), load_profile("paper-dryrun")
    assert set(paper.defaults) == set(dry.defaults)
    differing = {k for k in paper.defaults if paper.defaults[k] != dry.defaults[k]}
    assert differing == SUBSTITUTED
    for stem in [p.stem for p in paper.notebook_paths()]:
        for a, b in zip(paper.parameters_for(stem), dry.parameters_for(stem), strict=True):
            assert {k for k in a if a[k] != b[k]} <= SUBSTITUTED | {"profile"}
    assert dry.defaults["model"] == "qwen2-audio-7b-layout-random"
    assert dry.defaults["benchmark"] == "mmau-test-mini-standin"
    assert paper.defaults["normalizer"] == "all" and paper.defaults["decoding"] == "greedy"
    assert paper.defaults["benchmark"].startswith("mmau-test-mini:")  # the paper-comparable kind


def test_official_chat_template_renders_as_transformers_qwen2_audio_template(tmp_path):
    from jinja2 import Environment
    from transformers import Qwen2AudioProcessor

    from reliable_lalm.models.hf_loading import QWEN2_AUDIO_INSTRUCT_CHAT_TEMPLATE
    from reliable_lalm.models.chat import conversation

    reference = Qwen2AudioProcessor.default_chat_template.fget(None)
    for conv in (conversation("What is it?"), conversation("What is it?", "Example 1: ...")):
        ours = Environment().from_string(QWEN2_AUDIO_INSTRUCT_CHAT_TEMPLATE).render(messages=conv,
                                                                                    add_generation_prompt=True)
        theirs = Environment().from_string(reference).render(messages=conv, add_generation_prompt=True)
        assert ours == theirs
        assert ours.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


def test_standin_model_is_built_deterministically_with_the_real_processor_configuration(tmp_path):
    from transformers import AutoProcessor

    from reliable_lalm.models.registry import resolve_model
    from reliable_lalm.models.standin import build_layout_random_checkpoint
    from reliable_lalm.models.hf_loading import QWEN2_AUDIO_INSTRUCT_GENERATION, published_generation_settings

    a, b = build_layout_random_checkpoint(tmp_path / "a"), build_layout_random_checkpoint(tmp_path / "b")
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (a, b)]
    assert digest[0] == digest[1]
    processor = AutoProcessor.from_pretrained(a)
    fe = processor.feature_extractor
    assert (fe.feature_size, fe.chunk_length, fe.n_samples, fe.hop_length) == (128, 30, 480000, 160)
    assert "You are a helpful assistant." in processor.chat_template
    assert published_generation_settings(str(a)) == QWEN2_AUDIO_INSTRUCT_GENERATION
    config = json.loads((a / "config.json").read_text())
    assert config["audio_config"]["max_source_positions"] == 1500 and config["audio_config"]["num_mel_bins"] == 128
    entry = resolve_model("qwen2-audio-7b-layout-random")
    assert entry.paper_label is None and entry.backend.endswith("qwen2_audio:Qwen2AudioBackend")


@metadata
def test_standin_benchmark_uses_the_real_metadata_with_generated_audio():
    import soundfile as sf

    from reliable_lalm.benchmarks import mmau_standin
    from reliable_lalm.benchmarks.registry import load, parse_benchmark

    entry, _ = parse_benchmark("mmau-test-mini-standin")
    assert entry.paper_reference and entry.loader == parse_benchmark("mmau-test-mini:x.json")[0].loader
    bench = load("mmau-test-mini-standin")
    real = json.loads(mmau_standin.metadata_path().read_text())
    expected = mmau_standin.select_records(real)
    assert [it.id for it in bench.items] == [r["id"] for r in expected]
    assert [(it.question, tuple(it.choices), it.answer) for it in bench.items] == \
        [(r["question"], tuple(r["choices"]), r["answer"]) for r in expected]
    lengths = sorted(sf.info(it.audio_path).duration for it in bench.items)
    assert lengths[-1] > 30 and lengths[0] == pytest.approx(10.0)
    assert paths.CACHE_DIR in mmau_standin.generate().parents  # never inside the repository's tracked files


@pytest.fixture(scope="module")
def dryrun(tmp_path_factory):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from dryrun_judge import judge_server

    from reliable_lalm.runner.reproduce import reproduce

    runs = tmp_path_factory.mktemp("runs")
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    with judge_server() as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url  # the notebooks' kernels inherit it
        os.environ.pop("OPENAI_API_KEY", None)
        try:
            report = reproduce("paper-dryrun", runs_root=runs)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return report, server.count, runs


@pytest.mark.notebooks
@metadata
def test_every_notebook_of_the_paper_profile_runs(dryrun):
    report, requests, _ = dryrun
    entries = report["notebooks"]
    assert report["status"] == "ok", [e.get("error") for e in entries if e["status"] != "ok"]
    assert [e["notebook"] for e in entries] == ["01_baselines", "02_idk_prompting", "03_mcot_and_agent", "04_sft",
                                                 "04_sft", "04_sft", "05_cross_modal", "06_idk_threshold",
                                                 "07_lora_alpha_ablation", "08_abstention_beyond_the_paper",
                                                 "09_uncertainty_and_guarantees"]
    assert all(not e["warnings"] for e in entries)  # the LLM was reached: no fallback to the rules
    assert requests > 0


@pytest.mark.notebooks
@metadata
def test_tables_say_which_normalizer_and_show_unlabelled_rows_without_paper_values(dryrun):
    tables = paths.tables_dir("paper-dryrun")
    caption = (tables / "table1.md").read_text().splitlines()[0]
    assert "normalized by gpt-4o-mini at 127.0.0.1" in caption and "every output" in caption
    # Table 3 lays out the paper's three models with the paper's labels: the stand-in's rows carry
    # Qwen2-Audio-Instruct's, and the workers without their environment say so per row.
    table3 = (tables / "table3.md").read_text()
    labels = [line.split("|")[1].strip() for line in table3.splitlines() if line.startswith("| ") and "---" not in line]
    assert labels[1:] == ["Qwen2-Audio-Instruct"] * 2 + ["Qwen-Audio-Chat"] * 2 + ["SALMONN"] * 2
    for label in ("Qwen-Audio-Chat", "SALMONN"):
        assert f"| {label} | no | not run |" in table3 and f"{label} / yes: not run: worker environment not configured" in table3
    side = (tables / "table3_vs_paper.md").read_text()
    assert "paper rows without ours" not in side
    for name in ("table1", "table2", "table10", "table11", "table12", "figure5", "figure4",
                 "04_sft__modality-speech__table10_row"):
        assert (tables / f"{name}.csv").is_file(), name
    assert (tables / "table1_vs_paper.md").is_file()  # the paper-comparable kind: set beside the paper
