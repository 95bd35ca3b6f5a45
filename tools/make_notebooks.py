"""Writes notebooks/*.ipynb (thin: parameters, then library calls). Run: python tools/make_notebooks.py

The notebooks are the product; this script only keeps their shared cells identical. Edit a notebook
here, regenerate, and commit both (tests check the committed notebooks have no outputs).
"""
from __future__ import annotations

from pathlib import Path

import json
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from reliable_lalm.runner.profiles import parse_parameters_source  # noqa: E402

COMMON_PARAMETERS = '''\
profile: str = "demo"  # parameter profile (params/<profile>.yaml); names the output folders
model: str = "demo"  # "demo" (shipped checkpoint), a local checkpoint folder, or a hub id in the HF cache
benchmark: str = "synthetic"  # "synthetic" (demo test split) or an MMAU-schema JSON file
audio_dir: str | None = None  # folder the benchmark's audio_id paths are relative to (default: beside the JSON)
limit_per_task: int | None = None  # evaluate only the first N items of each modality (ci profile)
batch_size: int | None = None  # inference batch size (None: chosen by the engine)
device: str = "auto"  # "auto", "cpu" or "cuda"
normalizer: str = "rule"  # "rule", "auto", "openai" or "all" (the paper: the LLM judges every output); key from OPENAI_API_KEY
knn_normalizer: str | None = None  # what judges the K@N samples (04-07); None: the same as normalizer
decoding: str = "greedy"  # "greedy" (the paper states none) or "generation_config" (the checkpoint's published sampling)
few_shot_file: str | None = None  # MCoT few-shot examples (JSON); None: the checkpoint's training.json
bootstrap: int = 1000  # bootstrap resamples for the 95% confidence intervals (0: none)
seed: int = 0  # seed of sampling and of the bootstrap'''

SETUP = '''\
from IPython.display import Markdown, display

from reliable_lalm import experiments, reporting
from reliable_lalm.experiments import Experiment
from reliable_lalm.runner.outputs import notebook_setup

# Checks the parameters (and applies -p profile NAME) before any work; tables/<profile>/ and
# figures/<profile>/ only for the profile's own parameters, else <profile>+<hash>/.
output = notebook_setup("{stem}", globals())
exp = Experiment(profile=profile, model=model, benchmark=benchmark, audio_dir=audio_dir,
                 limit_per_task=limit_per_task, batch_size=batch_size, device=device,
                 normalizer=normalizer, knn_normalizer=knn_normalizer, decoding=decoding,
                 few_shot_file=few_shot_file, bootstrap=bootstrap, seed=seed)
compare = experiments.paper_comparable(benchmark)  # on MMAU, tables are shown beside the paper's numbers
display(exp.loaded_benchmark.summary())'''


def setup_cell(stem: str, parameters_source: str) -> str:
    """The setup cell: every declared parameter goes to the output-folder rule by name."""
    return SETUP.format(stem=stem)


DEFAULTS = {}  # stem -> declared parameters, written to lib/reliable_lalm/runner/notebook_defaults.json


def notebook(stem: str, title: str, intro: str, extra_parameters: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    parameters = COMMON_PARAMETERS + ("\n" + extra_parameters if extra_parameters else "")
    DEFAULTS[stem] = {k: {"type": p.type_name, "default": p.default}
                      for k, p in parse_parameters_source(parameters).items()}
    nb_cells = [new_markdown_cell(f"# {title}\n\n{intro}"),
                new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                new_code_cell(setup_cell(stem, parameters))]
    for kind, source in cells:
        nb_cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    nb = new_notebook(cells=nb_cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def table_cell(var: str, name: str, caption: str, paper: str | None) -> str:
    """Save a table under tables/<profile>/ (beside the paper's numbers on MMAU) and show it."""
    reference = f'reporting.paper_table("{paper}") if compare else None' if paper else "None"
    name_source = f'f"{name}"' if "{" in name else f'"{name}"'  # names may carry parameters
    return (f'reporting.save_table({var}, {name_source}, output.tag, caption="{caption} " + exp.normalizer_caption,\n'
            f'                     reference={reference})\n{var}')


NOTEBOOKS = {}

NOTEBOOKS["01_baselines"] = notebook(
    "01_baselines",
    "01 · Baselines",
    "Baseline prompt (paper Table 4) on every modality, scored two ways: MMAU's official string match on the raw "
    "outputs (Table 1, *MMAU (Unnormalized)*) and our normalizer (*Ours (Normalized)*), with the reference rows "
    "(random guess, most frequent choice) computed on the same items. Also Table 3's baseline rows for every "
    "configured model.",
    "table3_models: list = [\"audio-flamingo-3-tiny-random\"]  # further models (registry names, checkpoint folders) for Table 3; the demo's is a random-weight second family",
    [
        ("code", 'normalized = exp.score("baseline", baseline=None)\n'
                 'unnormalized = exp.score_unnormalized("baseline")\n'
                 'rows = {"MMAU (Unnormalized)": unnormalized, "Ours (Normalized)": normalized, **exp.reference_rows()}\n'
                 'table1_baselines = reporting.table1(rows)\n'
                 + table_cell("table1_baselines", "01_baselines__table1_rows",
                              "Table 1, baseline and reference rows: Acc/Tru/Rel (%).", "table1")),
        ("code", 'display(Markdown("95% bootstrap intervals"))\n'
                 'experiments.ci_table({"Ours (Normalized)": normalized})'),
        ("code", 'display(Markdown("How the normalizer decided (rule names and counts)"))\n'
                 'normalized["normalizer"]'),
        ("code", 'table3_baselines = reporting.table3(experiments.table3_scores(exp, table3_models, idk=False))\n'
                 + table_cell("table3_baselines", "01_baselines__table3_rows",
                              "Table 3, baseline rows: Acc/Tru/Rel (%).", None)),
    ])

NOTEBOOKS["02_idk_prompting"] = notebook(
    "02_idk_prompting",
    "02 · IDK prompting",
    "The IDK prompt (paper Table 5) against the baseline on the same items: Acc/Tru/Rel (Table 1 rows), ΔCon, "
    "ΔHum and RGI in both conventions (Table 2 rows; *subset* is what the paper prints, *class* is its equations "
    "8–9), and Table 3 (baseline and IDK rows of every configured model).",
    "table3_models: list = [\"audio-flamingo-3-tiny-random\"]  # further models (registry names, checkpoint folders) for Table 3; the demo's is a random-weight second family",
    [
        ("code", 'idk = exp.score("idk")\n'
                 'table1_idk = reporting.table1({"IDK Prompting": idk})\n'
                 + table_cell("table1_idk", "02_idk_prompting__table1_rows", "Table 1, IDK prompting: Acc/Tru/Rel (%).", None)),
        ("code", 'table2_idk = reporting.table2({"IDK Prompting": idk}, "subset")\n'
                 + table_cell("table2_idk", "02_idk_prompting__table2_rows",
                              "Table 2, IDK prompting: ΔCon%, ΔHum% (divided by the subset size N) and RGI.", None)),
        ("code", 'table2_idk_class = reporting.table2({"IDK Prompting": idk}, "class")\n'
                 + table_cell("table2_idk_class", "02_idk_prompting__table2_rows_class",
                              "Table 2, IDK prompting, class convention (equations 8-9: divided by Nc and Nw).", None)),
        ("md", "**Which RGI convention?** A method that rejects items at random knows nothing, so a gain index should "
               "give it 0. Below, the expected ΔCon, ΔHum and RGI of rejecting a random 20 % of the items, computed by the "
               "library (`metrics.random_rejection_gains`) from this baseline's own correct (Nc) and wrong (Nw) counts: "
               "the *class* convention (equations 8-9) gives 0; the *subset* convention, which the paper's Tables 2 and 11 "
               "print, gives log10(Nw/Nc), positive wherever the baseline is wrong more often than right "
               "(README, section 'Which RGI?')."),
        ("code", 'from reliable_lalm.core import metrics\n'
                 'random_rows = []\n'
                 'for group, g in [*idk["by_task"].items(), ("total", idk)]:\n'
                 '    nc, nw = g["ncc"] + g["ncr"] + g["ncw"], g["nwc"] + g["nwr"] + g["nww"]\n'
                 '    gains = metrics.random_rejection_gains(nc, nw, rate=0.2) if nc and nw else {}\n'
                 '    random_rows.append({"group": group, "Nc": nc, "Nw": nw,\n'
                 '                        **{f"{c} {k}": getattr(gains[c], k) for c in gains for k in ("d_con", "d_hum", "rgi")}})\n'
                 'experiments.frame(random_rows)'),
        ("code", 'display(Markdown("Transitions baseline → IDK prompt, and 95% bootstrap intervals (paired for the gains)"))\n'
                 'display({k: idk[k] for k in ("ncc", "ncr", "ncw", "nwc", "nwr", "nww", "nrc", "nrr", "nrw")})\n'
                 'experiments.ci_table({"IDK Prompting": idk}, metrics=("acc", "rej", "rel", "d_con_subset", "d_hum_subset", "rgi_subset"))'),
        ("code", 'table3 = reporting.table3(experiments.table3_scores(exp, table3_models, idk=True))\n'
                 + table_cell("table3", "table3", "Table 3: baseline and IDK prompting, Acc/Tru/Rel (%).", "table3")),
    ])

NOTEBOOKS["03_mcot_and_agent"] = notebook(
    "03_mcot_and_agent",
    "03 · MCoT prompting and the task agent",
    "Multimodal chain-of-thought (paper Table 6, with few-shot examples) and the three-step task agent (Table 7: "
    "audio type, content, answer; each step batched over all items), against the baseline: their rows of "
    "Tables 1 and 2.",
    "",
    [
        ("code", 'mcot = exp.score("mcot")\nagent = exp.score("agent")\nrows = {"MCoT Prompting": mcot, "Task Agent": agent}\n'
                 'table1_mcot_agent = reporting.table1(rows)\n'
                 + table_cell("table1_mcot_agent", "03_mcot_and_agent__table1_rows",
                              "Table 1, MCoT prompting and task agent: Acc/Tru/Rel (%).", None)),
        ("code", 'table2_mcot_agent = reporting.table2(rows, "subset")\n'
                 + table_cell("table2_mcot_agent", "03_mcot_and_agent__table2_rows",
                              "Table 2, MCoT prompting and task agent: ΔCon%, ΔHum% (subset convention) and RGI.", None)),
        ("code", 'table2_mcot_agent_class = reporting.table2(rows, "class")\n'
                 + table_cell("table2_mcot_agent_class", "03_mcot_and_agent__table2_rows_class",
                              "Table 2, MCoT prompting and task agent, class convention (equations 8-9).", None)),
        ("code", 'display(Markdown("A few outputs of each step (first items of each modality)"))\n'
                 'exp.examples(["mcot", "agent"], per_task=1)'),
    ])

KNN_PARAMETERS = '''\
knn_samples: int = 5  # N of K@N: sampled answers per item (the paper: 5)
knn_temperature: float = 0.5  # sampling temperature of the K@N pass (not stated in the paper; paper profile: 1.0)
knn_top_p: float = 1.0  # nucleus sampling of the K@N pass (1.0: off)'''

NOTEBOOKS["06_idk_threshold"] = notebook(
    "06_idk_threshold",
    "06 · IDK threshold K@N",
    "One K@N sampling pass per modality (N answers per item, from one shared prefill per item) gives the "
    "IDK share of the training set for every threshold K = 1..N (paper Figure 5: 1@5 = 50.2 %, 5@5 = 63.5 % "
    "on MMAU with Qwen2-Audio). The samples are cached and reused by 04_sft.",
    KNN_PARAMETERS,
    [
        ("code", 'figure5 = exp.idk_fractions(n_samples=knn_samples, temperature=knn_temperature, top_p=knn_top_p)\n'
                 'display(Markdown(f"Items left out of the K@N labels: {figure5.attrs[\'skipped\']}"))\n'
                 + table_cell("figure5", "figure5", "Figure 5 data: IDK share (%) of the K@N training set.", None)),
        ("code", 'fig5 = reporting.figure5(figure5, with_paper=compare)  # the paper\'s quoted 1@5 and 5@5 on MMAU\n'
                 'reporting.save_figure(fig5.figure, "figure5", output.tag, data=fig5.data)'),
    ])

SFT_PARAMETERS = KNN_PARAMETERS + '''
knn_k: int = 4  # K of K@N: an item keeps its answer when at least K of the N samples are correct (paper: 5@5)
sft_learning_rate: float = 3e-3  # LoRA SFT learning rate; the paper's 3e-5 (Table 9) is for the 7B model
sft_epochs: int = 10  # passes over the IDK set (paper: 1; the tiny demo needs more)
sft_batch_size: int = 8  # micro-batch of the LoRA SFT
lora_rank: int = 8  # LoRA rank (Table 9)
lora_alpha: float | None = None  # None: Table 9 (32 for sound and music, 16 for speech)
lora_targets: str = "language_model_only"  # or "paper_names": Table 9's q/k/v names as PEFT reads them (audio encoder too)'''

SFT_SETUP = ('sft = dict(learning_rate=sft_learning_rate, epochs=sft_epochs, batch_size=sft_batch_size, rank=lora_rank,\n'
             '           alpha=lora_alpha, lora_targets=lora_targets)\n'
             'cm = exp.crossmodal(knn_samples=knn_samples, knn_k=knn_k, knn_temperature=knn_temperature,\n'
             '                    knn_top_p=knn_top_p, sft=sft)')

NOTEBOOKS["04_sft"] = notebook(
    "04_sft",
    "04 · IDK dataset and LoRA SFT on one modality",
    "Builds the K@N IDK dataset of the training modality from one sampling pass (paper section 3.2), trains a "
    "LoRA adapter on it (peft; language model q/k/v only, audio encoder frozen; Table 9 hyper-parameters), "
    "and evaluates the fine-tuned model with the baseline prompt on the other modalities against the base "
    "model: its rows of Tables 10, 11 and 12. Run once per modality "
    "(`papermill notebooks/04_sft.ipynb out.ipynb -p modality music`).",
    'modality: str = "sound"  # training modality: its IDK set trains the adapter, the other two test it\n' + SFT_PARAMETERS,
    [
        ("code", 'exp.require_modalities(modality)  # a modality the benchmark lacks fails here, before any work\n'
                 + SFT_SETUP + '\nadapter = cm.adapter(modality)\n'
                 'display(Markdown(f"Adapter: `{adapter}`"))\n'
                 'experiments.adapter_summary(adapter)'),
        ("code", 'rows = cm.run_cell(modality, list(exp.modalities))\n'
                 'cells = experiments.frame(rows)\n'
                 'cells[["train", "test", "in_domain", "n", "acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi", "rgi_low", "rgi_high"]]'),
        ("code", 'table10_row = reporting.table10(cells)\n'
                 + table_cell("table10_row", "04_sft__modality-{modality}__table10_row",
                              "Table 10 row: Acc/Tru/Rel (%) of the adapter trained on this modality.", None)),
        ("code", 'table11_row = reporting.table11(cells)\n'
                 + table_cell("table11_row", "04_sft__modality-{modality}__table11_row",
                              "Table 11 row: ΔCon%, ΔHum% (subset convention) and RGI.", None)),
        ("code", 'table12_row = reporting.table12(cells)\n'
                 + table_cell("table12_row", "04_sft__modality-{modality}__table12_row",
                              "Table 12 row: IDK share of the training set and rejection rate (%), in-domain cell included.", None)),
    ])

NOTEBOOKS["05_cross_modal"] = notebook(
    "05_cross_modal",
    "05 · Cross-modal transfer",
    "Adapters trained on each modality and tested on the others (cached from 04_sft, trained here if missing): "
    "Figure 3 (RGI heatmap), Tables 10–12, and the assembled Tables 1 and 2 whose *LoRA Fine-tuning* row is "
    "cross-validated as in the paper (for each test modality, the mean over the two adapters trained on the "
    "other modalities; the total is the mean of the three modalities).",
    SFT_PARAMETERS,
    [
        ("code", SFT_SETUP + '\ncells = cm.results()\n'
                 'cells[["train", "test", "in_domain", "acc", "rej", "rel", "d_con", "d_hum", "rgi", "rgi_low", "rgi_high"]]'),
        ("code", 'figure3 = reporting.figure3(cells, title="RGI, train (rows) to test")\n'
                 'reporting.save_figure(figure3.figure, "figure3", output.tag, data=figure3.data)\n'
                 'figure3.data'),
        ("code", 'table10 = reporting.table10(cells)\n'
                 + table_cell("table10", "table10", "Table 10: Acc/Tru/Rel (%) of LoRA fine-tuning, trained on one modality (rows), tested on another.", "table10")),
        ("code", 'table11 = reporting.table11(cells)\n'
                 + table_cell("table11", "table11", "Table 11: ΔCon%, ΔHum% (subset convention) and RGI of LoRA fine-tuning.", "table11")),
        ("code", 'table12 = reporting.table12(cells)\n'
                 + table_cell("table12", "table12", "Table 12: IDK share of each training set and rejection rate (%) per test modality.", "table12")),
        ("code", 'lora = experiments.cross_validated(experiments.lora_scores(cm))\n'
                 'rows = {"IDK Prompting": exp.score("idk"), "MCoT Prompting": exp.score("mcot"),\n'
                 '        "Task Agent": exp.score("agent"), "LoRA Fine-tuning": lora}\n'
                 'table1 = reporting.table1({"Ours (Normalized)": exp.score("baseline", baseline=None), **rows})\n'
                 + table_cell("table1", "table1", "Table 1: Acc/Tru/Rel (%) of the baseline and every reliable method.", "table1")),
        ("code", 'table2 = reporting.table2(rows, "subset")\n'
                 + table_cell("table2", "table2", "Table 2: ΔCon%, ΔHum% (divided by the subset size N, as the paper prints) and RGI.", "table2")),
        ("code", 'table2_class = reporting.table2(rows, "class")\n'
                 + table_cell("table2_class", "table2_class", "Table 2 in the class convention (equations 8-9: ΔCon over Nc, ΔHum over Nw).", None)),
    ])

NOTEBOOKS["07_lora_alpha_ablation"] = notebook(
    "07_lora_alpha_ablation",
    "07 · LoRA alpha ablation",
    "Adapters trained on one modality (the paper: speech) with several LoRA alphas, tested on the other two: "
    "rejection rate, reliability and RGI against alpha (paper Figure 4 a–c), with 95% bootstrap intervals.",
    SFT_PARAMETERS + '''
train_modality: str = "speech"  # the modality the adapters are trained on (paper: speech)
alphas: list = [4, 16, 64]  # LoRA alphas of the sweep (the paper's axis values are not in its text)''',
    [
        ("code", 'exp.require_modalities(train_modality)  # fails here, before any work\n'
                 + SFT_SETUP + '\ntests = [t for t in exp.modalities if t != train_modality]\n'
                 'sweep = cm.alpha_sweep(alphas, train_task=train_modality, test_tasks=tests)\n'
                 'sweep[["alpha", "test", "n", "rej", "rel", "rgi", "rgi_low", "rgi_high", "rgi_reason"]]'),
        ("code", 'figure4 = reporting.figure4(sweep)\n'
                 + table_cell("figure4.data", "figure4", "Figure 4 data: rejection rate (%), reliability (%) and RGI against LoRA alpha.", None)),
        ("code", 'reporting.save_figure(figure4.figure, "figure4", output.tag, data=figure4.data)'),
    ])

NOTEBOOKS["08_abstention_beyond_the_paper"] = notebook(
    "08_abstention_beyond_the_paper",
    "08 · Abstention beyond the paper",
    "What the paper does not measure (issue 20; definitions in `docs/abstention.md`). Abstention from the base "
    "model's own *confidence* — softmax over per-option log-likelihoods, P(IDK) under the IDK prompt, agreement "
    "and entropy of the K@N samples — as risk–coverage curves, AURC, accuracy and selective Rel at fixed "
    "coverage, calibration (ECE, Brier, reliability diagrams) and confidence-target scoring; the paper's "
    "Acc/Tru/Rej/Rel/RGI of *threshold on confidence* at the rejection rate of IDK prompting and of each LoRA "
    "adapter; refusals on *unanswerable* variants of the questions (correct option removed, another item's "
    "options, another modality's audio) against refusals on answerable ones; and option-order robustness "
    "(all cyclic rotations of the choices). Reuses the runs, K@N samples and adapters cached by notebooks 01–05.",
    SFT_PARAMETERS + '''
ece_bins: int = 10  # bins of the ECE and the reliability diagrams
ece_binning: str = "equal-width"  # "equal-width" or "equal-mass" (the table shows the other one beside it)
coverages: list = [0.5, 0.8, 0.9]  # coverages at which selective accuracy and Rel are reported
confidence_targets: list = [0.5, 0.75, 0.9]  # t of confidence-target scoring (wrong answer costs t/(1-t))
with_lora: bool = True  # compare the LoRA adapters of notebooks 04/05 too (trained here if not cached)''',
    [
        ("code", SFT_SETUP + '\n'
                 'from reliable_lalm.experiments.abstention import AbstentionStudy, default_mmau_metadata, mmau_unanswerable_counts\n'
                 'study = AbstentionStudy(exp, cm=cm if with_lora else None, knn_samples=knn_samples,\n'
                 '                        knn_temperature=knn_temperature, knn_top_p=knn_top_p, n_bins=ece_bins,\n'
                 '                        binning=ece_binning, coverages=tuple(coverages), targets=tuple(confidence_targets))\n'
                 'study.confidence_frame().head()'),
        ("md", "## Risk–coverage: abstaining on the baseline's least confident answers"),
        ("code", 'risk_coverage = study.risk_coverage_table()\n'
                 + table_cell("risk_coverage", "08_abstention__risk_coverage",
                              "AURC, E-AURC and accuracy / selective Rel (%) at fixed coverage of the baseline's answers, per confidence score.", None)),
        ("code", 'reporting.save_figure(study.risk_coverage_figure(), "08_abstention__risk_coverage", output.tag, data=study.risk_coverage_data())'),
        ("md", "## Calibration"),
        ("code", 'calibration = study.calibration_table()\n'
                 + table_cell("calibration", "08_abstention__calibration",
                              "ECE (both binnings), MCE and Brier score of each confidence score against the baseline's correctness.", None)),
        ("code", 'reporting.save_figure(study.reliability_figure(), "08_abstention__reliability", output.tag, data=study.reliability_data())'),
        ("code", 'confidence_targets_table = study.confidence_target_table()\n'
                 + table_cell("confidence_targets_table", "08_abstention__confidence_targets",
                              "Mean confidence-target score (correct +1, wrong -t/(1-t), abstain 0).", None)),
        ("md", "## IDK prompting and LoRA SFT against a confidence threshold at the same rejection rate"),
        ("code", 'equal_rejection = study.equal_rejection_table()\n'
                 + table_cell("equal_rejection", "08_abstention__equal_rejection",
                              "Acc/Tru/Rej/Rel (%), ΔCon/ΔHum (%, subset convention) and RGI of each method and of thresholding each score at its rejection rate.", None)),
        ("md", "## Unanswerable questions"),
        ("code", 'unanswerable_counts = study.unanswerable_counts_table()\n'
                 + table_cell("unanswerable_counts", "08_abstention__unanswerable_counts",
                              "Unanswerable variants built and skipped per kind and modality.", None)),
        ("code", 'unanswerable = study.unanswerable_table()\n'
                 + table_cell("unanswerable", "08_abstention__unanswerable",
                              "Refusal rate (%) on answerable and unanswerable items, hallucination rate and gap (percentage points).", None)),
        ("code", 'mmau = default_mmau_metadata()\n'
                 'if mmau is None:\n'
                 '    display(Markdown("MMAU test-mini metadata not found under `../shared/mmau/`: its variants are not counted here."))\n'
                 'else:\n'
                 '    display(Markdown(f"Unanswerable variants of `{mmau.name}` (metadata only, no audio read)"))\n'
                 '    display(mmau_unanswerable_counts(mmau, seed=seed)[1])'),
        ("md", "## Option order: circular evaluation"),
        ("code", 'circular = study.circular_table()\n'
                 + table_cell("circular", "08_abstention__circular",
                              "Consistency and accuracy (%) under all cyclic rotations of the options, per modality.", None)),
    ])


def rendered() -> dict[Path, str]:
    """Every generated file (path -> text), exactly as :func:`main` writes it; the test suite
    compares them with the committed files, so a notebook edited by hand fails the tests."""
    out: dict[Path, str] = {}
    for stem, nb in NOTEBOOKS.items():
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{stem[:2]}-{i:02d}"  # stable ids: regenerating gives no diff
        nbformat.validate(nb)
        out[ROOT / "notebooks" / f"{stem}.ipynb"] = nbformat.writes(nb) + "\n"
    # The reference of the output-folder rule (reliable_lalm.runner.outputs): the generated defaults.
    out[ROOT / "lib" / "reliable_lalm" / "runner" / "notebook_defaults.json"] = \
        json.dumps(DEFAULTS, indent=2, sort_keys=True) + "\n"
    return out


def main() -> None:
    (ROOT / "notebooks").mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
