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


def table_cell(var: str, name: str, caption: str, paper: str | None, percent: str = "") -> str:
    """Save a table under tables/<profile>/ (beside the paper's numbers on MMAU) and show it in the
    paper's units (2 decimals; ``percent``: a tuple literal of fraction columns shown in %)."""
    reference = f'reporting.paper_table("{paper}") if compare else None' if paper else "None"
    name_source = f'f"{name}"' if "{" in name else f'"{name}"'  # names may carry parameters
    shown = f"reporting.styled({var}, percent={percent})" if percent else f"reporting.styled({var})"
    return (f'reporting.save_table({var}, {name_source}, output.tag, caption="{caption} " + exp.normalizer_caption,\n'
            f'                     reference={reference})\n{shown}')


def md(title: str, text: str) -> tuple[str, str]:
    """The heading and one or two sentences a reader needs before a table or figure: what it shows,
    which direction is better, what the paper found."""
    return ("md", f"### {title}\n\n{text}")


CELL_FRACTIONS = '("acc", "tru", "rej", "rel", "d_con", "d_hum")'  # what the cross-modal cell frames hold as fractions

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
        md("Table 1, baseline rows",
           "Accuracy, truthfulness and reliability (%) of the baseline prompt, higher is better; without refusals "
           "all three are equal. The paper's Qwen2-Audio baseline scores 49.20 % with MMAU's string match and "
           "55.60 % once its answers are normalized; random guessing scores about 26 %."),
        ("code", 'normalized = exp.score("baseline", baseline=None)\n'
                 'unnormalized = exp.score_unnormalized("baseline")\n'
                 'rows = {"MMAU (Unnormalized)": unnormalized, "Ours (Normalized)": normalized, **exp.reference_rows()}\n'
                 'table1_baselines = reporting.table1(rows)\n'
                 + table_cell("table1_baselines", "01_baselines__table1_rows",
                              "Table 1, baseline and reference rows: Acc/Tru/Rel (%).", "table1")),
        md("How sure are these numbers?",
           "Each cell is the score with its 95 % bootstrap interval `x [lo, hi]` in %, resampling the items; "
           "two rows whose intervals overlap widely are not told apart by this benchmark."),
        ("code", 'reporting.interval_table({"Ours (Normalized)": normalized})'),
        md("How the normalizer decided",
           "How many outputs each rule of the answer normalizer mapped to an option, to IDK or to nothing "
           "(invalid, scored as wrong). Many invalid outputs mean the model does not answer in the options' words."),
        ("code", 'normalized["normalizer"]'),
        md("Table 3, baseline rows",
           "The baseline of every configured model on the same items (%, higher is better). In the paper "
           "Qwen2-Audio-Instruct leads Qwen-Audio-Chat and SALMONN on most metrics; the demo's second family is a "
           "random-weight model that answers nothing usable (0 %), there to show a second family runs."),
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
    "table3_models: list = []  # further models (registry names, checkpoint folders) for Table 3, e.g. [\"audio-flamingo-3-tiny-random\"] (the demo's random-weight second family)",
    [
        md("Table 1, IDK prompting row",
           "Acc, Tru and Rel (%) with the IDK prompt; higher is better. A refusal lowers accuracy but raises "
           "truthfulness; reliability weighs the two. The paper: Acc 55.60 → 52.10 %, Tru 55.60 → 67.10 %, "
           "Rel 55.60 → 64.85 % (total)."),
        ("code", 'idk = exp.score("idk")\n'
                 'table1_idk = reporting.table1({"IDK Prompting": idk})\n'
                 + table_cell("table1_idk", "02_idk_prompting__table1_rows", "Table 1, IDK prompting: Acc/Tru/Rel (%).", None)),
        md("Table 2, IDK prompting row (subset convention, as the paper prints)",
           "ΔCon: share of the baseline's correct answers the prompt turned into refusals (lower is better); ΔHum: "
           "share of its wrong answers turned into refusals (higher is better); RGI = log10(ΔHum/ΔCon), above 0 when "
           "the method refuses what it does not know. The paper: RGI 0.16 in total, positive in every modality."),
        ("code", 'table2_idk = reporting.table2({"IDK Prompting": idk}, "subset")\n'
                 + table_cell("table2_idk", "02_idk_prompting__table2_rows",
                              "Table 2, IDK prompting: ΔCon%, ΔHum% (divided by the subset size N) and RGI.", None)),
        md("Table 2 in the class convention (equations 8–9)",
           "The same gains, ΔCon divided by the baseline's correct answers and ΔHum by its wrong ones; here an RGI "
           "of 0 means no better than refusing at random (see the next table)."),
        ("code", 'table2_idk_class = reporting.table2({"IDK Prompting": idk}, "class")\n'
                 + table_cell("table2_idk_class", "02_idk_prompting__table2_rows_class",
                              "Table 2, IDK prompting, class convention (equations 8-9: divided by Nc and Nw).", None)),
        md("Which RGI convention? Refusing at random",
           "A method that rejects items at random knows nothing, so a gain index should give it 0. Below, the "
           "expected ΔCon, ΔHum (%) and RGI of rejecting a random 20 % of the items, computed by the library "
           "(`metrics.random_rejection_gains`) from this baseline's own correct (Nc) and wrong (Nw) counts: the "
           "*class* convention gives 0; the *subset* convention, which the paper's Tables 2 and 11 print, gives "
           "log10(Nw/Nc), positive wherever the baseline is wrong more often than right (README, 'Which RGI?')."),
        ("code", 'from reliable_lalm.core import metrics\n'
                 'random_rows = []\n'
                 'for group, g in [*idk["by_task"].items(), ("total", idk)]:\n'
                 '    nc, nw = g["ncc"] + g["ncr"] + g["ncw"], g["nwc"] + g["nwr"] + g["nww"]\n'
                 '    gains = metrics.random_rejection_gains(nc, nw, rate=0.2) if nc and nw else {}\n'
                 '    random_rows.append({"group": group, "Nc": nc, "Nw": nw,\n'
                 '                        **{f"{c} {k}": getattr(gains[c], k) for c in gains for k in ("d_con", "d_hum", "rgi")}})\n'
                 'random_rejection = experiments.frame(random_rows).set_index("group")\n'
                 'reporting.styled(random_rejection, percent=[c for c in random_rejection.columns if "d_" in c])'),
        md("Transitions baseline → IDK prompt",
           "How many items moved from each baseline outcome (rows) to each outcome under the IDK prompt (columns). "
           "A good method moves wrong answers to refusals (baseline wrong → method rejected) and keeps correct ones."),
        ("code", 'reporting.transition_table(idk)'),
        md("95 % bootstrap intervals",
           "Each cell `x [lo, hi]`: the value and its 95 % interval (%, RGI plain), resampling the items; the gains "
           "are paired with the baseline on the same resampled items. An RGI interval that contains 0 does not show "
           "that the prompt refuses what the model does not know."),
        ("code", 'reporting.interval_table({"IDK Prompting": idk}, metrics=("acc", "rej", "rel", "d_con_subset", "d_hum_subset", "rgi_subset"))'),
        md("Table 3: baseline and IDK prompting of each model",
           "Acc/Tru/Rel (%) of every model in `table3_models` with and without the IDK prompt; higher is better. In "
           "the paper, IDK prompting barely changes Qwen-Audio-Chat, makes SALMONN over-conservative, and helps "
           "Qwen2-Audio-Instruct most. The demo's random-weight Audio Flamingo 3 is left out by default (it answers "
           "nothing usable and takes most of the run): `-p table3_models '[\"audio-flamingo-3-tiny-random\"]'`."),
        ("code", 'table3 = reporting.table3(experiments.table3_scores(exp, table3_models, idk=True))\n'
                 + table_cell("table3", "table3", "Table 3: baseline and IDK prompting, Acc/Tru/Rel (%).", "table3")),
        md("Listen to a few items",
           "The first items where the IDK prompt changed the baseline's outcome: the clip, the question, both raw "
           "outputs and why the judge decided as it did. `rlalm report` writes every item as one HTML page."),
        ("code", 'item_report = reporting.build_item_report(exp.run("idk"), baseline=exp.run("baseline"),\n'
                 '                                          benchmark=exp.loaded_benchmark, normalizer=exp.normalizer_object)\n'
                 'changed = [it for it in item_report.items if it.baseline and it.baseline.outcome != it.method.outcome]\n'
                 'reporting.show_items(item_report, changed, n=3)'),
    ])

NOTEBOOKS["03_mcot_and_agent"] = notebook(
    "03_mcot_and_agent",
    "03 · MCoT prompting and the task agent",
    "Multimodal chain-of-thought (paper Table 6, with few-shot examples) and the three-step task agent (Table 7: "
    "audio type, content, answer; each step batched over all items), against the baseline: their rows of "
    "Tables 1 and 2.",
    "",
    [
        md("Table 1, MCoT and task agent rows",
           "Acc, Tru and Rel (%), higher is better. The paper (total): MCoT Rel 64.29 %, task agent 65.66 %, "
           "against the baseline's 55.60 %."),
        ("code", 'mcot = exp.score("mcot")\nagent = exp.score("agent")\nrows = {"MCoT Prompting": mcot, "Task Agent": agent}\n'
                 'table1_mcot_agent = reporting.table1(rows)\n'
                 + table_cell("table1_mcot_agent", "03_mcot_and_agent__table1_rows",
                              "Table 1, MCoT prompting and task agent: Acc/Tru/Rel (%).", None)),
        md("Table 2, MCoT and task agent rows (subset convention)",
           "ΔCon % (lower is better), ΔHum % (higher is better) and RGI (higher is better, > 0: refuses what it does "
           "not know). The paper (total): RGI 0.15 for MCoT and 0.23 for the task agent."),
        ("code", 'table2_mcot_agent = reporting.table2(rows, "subset")\n'
                 + table_cell("table2_mcot_agent", "03_mcot_and_agent__table2_rows",
                              "Table 2, MCoT prompting and task agent: ΔCon%, ΔHum% (subset convention) and RGI.", None)),
        md("Table 2 in the class convention (equations 8–9)",
           "The same gains divided by the baseline's correct (ΔCon) and wrong (ΔHum) answers: RGI 0 is chance."),
        ("code", 'table2_mcot_agent_class = reporting.table2(rows, "class")\n'
                 + table_cell("table2_mcot_agent_class", "03_mcot_and_agent__table2_rows_class",
                              "Table 2, MCoT prompting and task agent, class convention (equations 8-9).", None)),
        md("What the model wrote",
           "The raw outputs of each method (and each agent step) on the first item of every modality."),
        ("code", 'exp.examples(["mcot", "agent"], per_task=1)'),
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
        md("Figure 5 data: IDK share of the training set",
           "For each threshold K, the share (%) of items labelled IDK because fewer than K of the N samples were "
           "correct; it grows with K. The paper: 50.2 % at 1@5 and 63.5 % at 5@5, a small rise it reads as stable "
           "answers."),
        ("code", 'figure5 = exp.idk_fractions(n_samples=knn_samples, temperature=knn_temperature, top_p=knn_top_p)\n'
                 'display(Markdown(f"Items left out of the K@N labels: {figure5.attrs[\'skipped\']}"))\n'
                 + table_cell("figure5", "figure5", "Figure 5 data: IDK share (%) of the K@N training set.", None)),
        md("Figure 5", "The same shares against K, per modality (and the paper's two quoted points on MMAU)."),
        ("code", 'fig5 = reporting.figure5(figure5, with_paper=compare)  # the paper\'s quoted 1@5 and 5@5 on MMAU\n'
                 'reporting.save_figure(fig5.figure, "figure5", output.tag, data=fig5.data)'),
    ])

SFT_PARAMETERS = KNN_PARAMETERS + '''
knn_k: int = 4  # K of K@N: an item keeps its answer when at least K of the N samples are correct (paper: 5@5)
sft_learning_rate: float = 3e-3  # LoRA SFT learning rate; the paper's 3e-5 (Table 9) is for the 7B model
sft_epochs: int = 10  # passes over the IDK set (paper: 1; the tiny demo needs more)
sft_batch_size: int = 8  # micro-batch of the LoRA SFT
lora_rank: int = 8  # LoRA rank (Table 9)
lora_alpha: float | None = None  # None: Table 9's alpha of the training modality under lora_alpha_reading
lora_alpha_reading: str = "32-32-16"  # Table 9's alpha row (sound-music-speech): "32-32-16" or "32-16-16" (docs/paper_settings.md)
lora_targets: str = "language_model_only"  # or "paper_names": Table 9's q/k/v names as PEFT reads them (audio encoder too)'''

SFT_SETUP = ('sft = dict(learning_rate=sft_learning_rate, epochs=sft_epochs, batch_size=sft_batch_size, rank=lora_rank,\n'
             '           alpha=lora_alpha, alpha_reading=lora_alpha_reading, lora_targets=lora_targets)\n'
             'cm = exp.crossmodal(knn_samples=knn_samples, knn_k=knn_k, knn_temperature=knn_temperature,\n'
             '                    knn_top_p=knn_top_p, sft=sft)')

NOTEBOOKS["04_sft"] = notebook(
    "04_sft",
    "04 · IDK dataset and LoRA SFT on one modality",
    "Builds the K@N IDK dataset of the training modality from one sampling pass (paper section 3.2), trains a "
    "LoRA adapter on it (peft; Table 9 hyper-parameters, its ambiguous cells as `lora_alpha_reading` and `lora_targets` say), "
    "and evaluates the fine-tuned model with the baseline prompt on the other modalities against the base "
    "model: its rows of Tables 10, 11 and 12. Run once per modality "
    "(`papermill notebooks/04_sft.ipynb out.ipynb -p modality music`).",
    'modality: str = "sound"  # training modality: its IDK set trains the adapter, the other two test it\n' + SFT_PARAMETERS,
    [
        md("The adapter", "Where the LoRA adapter of this modality comes from and how it was trained (a shipped "
                          "demo adapter is evaluated as is when its training key matches)."),
        ("code", 'exp.require_modalities(modality)  # a modality the benchmark lacks fails here, before any work\n'
                 + SFT_SETUP + '\nadapter = cm.adapter(modality)\n'
                 'display(Markdown(f"Adapter: `{adapter}`"))\n'
                 'experiments.adapter_summary(adapter)'),
        md("Every cell of this adapter",
           "The fine-tuned model tested on each modality (%, `in_domain`: its own training modality), with ΔCon, ΔHum "
           "(%, lower and higher are better) and RGI with its 95 % interval (higher is better, > 0: it refuses what "
           "the base model gets wrong)."),
        ("code", 'rows = cm.run_cell(modality, list(exp.modalities))\n'
                 'cells = experiments.frame(rows)\n'
                 'reporting.styled(cells[["train", "test", "in_domain", "n", "acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi", "rgi_low", "rgi_high"]],\n'
                 f'                 percent={CELL_FRACTIONS})'),
        md("Table 10 row", "Acc/Tru/Rel (%) of this adapter on the other modalities, higher is better (the paper's "
                           "Table 10; its cross-validated means are Table 1's LoRA row)."),
        ("code", 'table10_row = reporting.table10(cells)\n'
                 + table_cell("table10_row", "04_sft__modality-{modality}__table10_row",
                              "Table 10 row: Acc/Tru/Rel (%) of the adapter trained on this modality.", None)),
        md("Table 11 row", "ΔCon % (lower is better), ΔHum % (higher is better) and RGI (higher is better) on the "
                           "other modalities; the paper finds every cross-modal RGI above 0."),
        ("code", 'table11_row = reporting.table11(cells)\n'
                 + table_cell("table11_row", "04_sft__modality-{modality}__table11_row",
                              "Table 11 row: ΔCon%, ΔHum% (subset convention) and RGI.", None)),
        md("Table 12 row", "The IDK share of the training set and the rejection rate (%) on each modality: an adapter "
                           "trained on more IDK labels refuses more."),
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
        md("Every train → test cell", "Each adapter on each modality (%), with ΔCon, ΔHum (%) and RGI with its 95 % "
                                      "interval; the figure and tables below are built from these rows."),
        ("code", SFT_SETUP + '\ncells = cm.results()\n'
                 'reporting.styled(cells[["train", "test", "in_domain", "acc", "rej", "rel", "d_con", "d_hum", "rgi", "rgi_low", "rgi_high"]],\n'
                 f'                 percent={CELL_FRACTIONS})'),
        md("Figure 3: RGI from one modality to another",
           "Rows: the training modality; columns: the test modality; higher is better, above 0 means the adapter "
           "refuses what the base model gets wrong. The paper finds every cell above 0 (a transferable 'meta "
           "ability'), highest when testing on sound."),
        ("code", 'figure3 = reporting.figure3(cells, title="RGI, train (rows) to test")\n'
                 'reporting.save_figure(figure3.figure, "figure3", output.tag, data=figure3.data)\n'
                 'reporting.styled(figure3.data)'),
        md("Table 10", "Acc/Tru/Rel (%) of each adapter (rows) on each other modality, higher is better."),
        ("code", 'table10 = reporting.table10(cells)\n'
                 + table_cell("table10", "table10", "Table 10: Acc/Tru/Rel (%) of LoRA fine-tuning, trained on one modality (rows), tested on another.", "table10")),
        md("Table 11", "ΔCon % (lower is better), ΔHum % (higher is better) and RGI (higher is better) of each "
                       "adapter on each other modality."),
        ("code", 'table11 = reporting.table11(cells)\n'
                 + table_cell("table11", "table11", "Table 11: ΔCon%, ΔHum% (subset convention) and RGI of LoRA fine-tuning.", "table11")),
        md("Table 12", "IDK share of each training set and the rejection rate (%) on each test modality."),
        ("code", 'table12 = reporting.table12(cells)\n'
                 + table_cell("table12", "table12", "Table 12: IDK share of each training set and rejection rate (%) per test modality.", "table12")),
        md("Table 1, assembled",
           "The baseline and every reliable method (%, higher is better); the LoRA row is cross-validated. The "
           "paper (total Rel): baseline 55.60, IDK 64.85, MCoT 64.29, task agent 65.66, LoRA 65.68."),
        ("code", 'lora = experiments.cross_validated(experiments.lora_scores(cm))\n'
                 'rows = {"IDK Prompting": exp.score("idk"), "MCoT Prompting": exp.score("mcot"),\n'
                 '        "Task Agent": exp.score("agent"), "LoRA Fine-tuning": lora}\n'
                 'table1 = reporting.table1({"Ours (Normalized)": exp.score("baseline", baseline=None), **rows})\n'
                 + table_cell("table1", "table1", "Table 1: Acc/Tru/Rel (%) of the baseline and every reliable method.", "table1")),
        md("Table 2, assembled (subset convention)",
           "ΔCon % (lower is better), ΔHum % (higher is better) and RGI (higher is better) of every method. The "
           "paper (total RGI): IDK 0.16, MCoT 0.15, task agent 0.23, LoRA 0.26."),
        ("code", 'table2 = reporting.table2(rows, "subset")\n'
                 + table_cell("table2", "table2", "Table 2: ΔCon%, ΔHum% (divided by the subset size N, as the paper prints) and RGI.", "table2")),
        md("Table 2 in the class convention (equations 8–9)", "The same gains over Nc and Nw: RGI 0 is chance."),
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
        md("Every alpha on every test modality",
           "Rejection rate and reliability (%) and RGI with its 95 % interval of each adapter; `rgi_reason` says why "
           "an RGI is undefined."),
        ("code", 'exp.require_modalities(train_modality)  # fails here, before any work\n'
                 + SFT_SETUP + '\ntests = [t for t in exp.modalities if t != train_modality]\n'
                 'sweep = cm.alpha_sweep(alphas, train_task=train_modality, test_tasks=tests)\n'
                 'reporting.styled(sweep[["alpha", "test", "n", "rej", "rel", "rgi", "rgi_low", "rgi_high", "rgi_reason"]], percent=("rej", "rel"))'),
        md("Figure 4 data",
           "The paper: the rejection rate grows with alpha (a), reliability first rises then falls (b), and RGI "
           "falls as alpha grows, below 0 for the largest (c)."),
        ("code", 'figure4 = reporting.figure4(sweep)\n'
                 + table_cell("figure4.data", "figure4", "Figure 4 data: rejection rate (%), reliability (%) and RGI against LoRA alpha.", None)),
        md("Figure 4", "Rejection rate (a), reliability (b) and RGI (c) against alpha, one line per test modality."),
        ("code", 'reporting.save_figure(figure4.figure, "figure4", output.tag, data=figure4.data)'),
    ])

NOTEBOOKS["08_abstention_beyond_the_paper"] = notebook(
    "08_abstention_beyond_the_paper",
    "08 · Abstention beyond the paper",
    "What the paper does not measure (definitions in `docs/abstention.md`). Abstention from the base "
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
        md("Confidence of the baseline's answers", "The first items with each confidence score beside the baseline's "
                                                    "correctness; every table below is computed from these scores."),
        ("code", SFT_SETUP + '\n'
                 'from reliable_lalm.experiments.abstention import AbstentionStudy, default_mmau_metadata, mmau_unanswerable_counts\n'
                 'study = AbstentionStudy(exp, cm=cm if with_lora else None, knn_samples=knn_samples,\n'
                 '                        knn_temperature=knn_temperature, knn_top_p=knn_top_p, n_bins=ece_bins,\n'
                 '                        binning=ece_binning, coverages=tuple(coverages), targets=tuple(confidence_targets))\n'
                 'reporting.styled(study.confidence_frame().head())'),
        ("md", "## Risk–coverage: abstaining on the baseline's least confident answers"),
        md("AURC and selective scores",
           "Area under the risk–coverage curve (lower is better; E-AURC: above the best possible ordering) and "
           "accuracy / selective Rel (%) when answering only the most confident share of items (higher is better)."),
        ("code", 'risk_coverage = study.risk_coverage_table()\n'
                 + table_cell("risk_coverage", "08_abstention__risk_coverage",
                              "AURC, E-AURC and accuracy / selective Rel (%) at fixed coverage of the baseline's answers, per confidence score.", None)),
        md("Risk–coverage curves", "Error rate of the answered items against the share answered; a lower curve is better."),
        ("code", 'reporting.save_figure(study.risk_coverage_figure(), "08_abstention__risk_coverage", output.tag, data=study.risk_coverage_data())'),
        ("md", "## Calibration"),
        md("Calibration errors", "ECE (both binnings), MCE and Brier score of each confidence against correctness; "
                                 "lower is better."),
        ("code", 'calibration = study.calibration_table()\n'
                 + table_cell("calibration", "08_abstention__calibration",
                              "ECE (both binnings), MCE and Brier score of each confidence score against the baseline's correctness.", None)),
        md("Reliability diagrams", "Accuracy against stated confidence per bin; the diagonal is perfect calibration."),
        ("code", 'reporting.save_figure(study.reliability_figure(), "08_abstention__reliability", output.tag, data=study.reliability_data())'),
        md("Confidence-target scoring", "Mean score when a wrong answer costs t/(1-t) and abstaining costs nothing; "
                                        "higher is better."),
        ("code", 'confidence_targets_table = study.confidence_target_table()\n'
                 + table_cell("confidence_targets_table", "08_abstention__confidence_targets",
                              "Mean confidence-target score (correct +1, wrong -t/(1-t), abstain 0).", None)),
        ("md", "## IDK prompting and LoRA SFT against a confidence threshold at the same rejection rate"),
        md("Equal rejection rate", "Each method beside thresholding each confidence score so that it refuses as often; "
                                   "at equal rejection, higher Rel and RGI mean better choices of what to refuse."),
        ("code", 'equal_rejection = study.equal_rejection_table()\n'
                 + table_cell("equal_rejection", "08_abstention__equal_rejection",
                              "Acc/Tru/Rej/Rel (%), ΔCon/ΔHum (%, subset convention) and RGI of each method and of thresholding each score at its rejection rate.", None)),
        ("md", "## Unanswerable questions"),
        md("Variants built", "How many unanswerable variants of each kind were built (and skipped) per modality."),
        ("code", 'unanswerable_counts = study.unanswerable_counts_table()\n'
                 + table_cell("unanswerable_counts", "08_abstention__unanswerable_counts",
                              "Unanswerable variants built and skipped per kind and modality.", None)),
        md("Refusals on unanswerable items", "Refusal rate (%) on answerable and unanswerable items: a method that knows "
                                             "when a question has no answer refuses unanswerable ones far more often "
                                             "(a larger gap is better; hallucination rate lower is better)."),
        ("code", 'unanswerable = study.unanswerable_table()\n'
                 + table_cell("unanswerable", "08_abstention__unanswerable",
                              "Refusal rate (%) on answerable and unanswerable items, hallucination rate and gap (percentage points).", None)),
        md("MMAU's own variants", "The same variants counted on the real MMAU test-mini metadata, when it is available."),
        ("code", 'mmau = default_mmau_metadata()\n'
                 'if mmau is None:\n'
                 '    display(Markdown("MMAU test-mini metadata not found under `../shared/mmau/`: its variants are not counted here."))\n'
                 'else:\n'
                 '    display(Markdown(f"Unanswerable variants of `{mmau.name}` (metadata only, no audio read)"))\n'
                 '    display(mmau_unanswerable_counts(mmau, seed=seed)[1])'),
        ("md", "## Option order: circular evaluation"),
        md("Circular evaluation", "Consistency (the same answer under every rotation of the options) and accuracy (%); "
                                  "higher is better."),
        ("code", 'circular = study.circular_table()\n'
                 + table_cell("circular", "08_abstention__circular",
                              "Consistency and accuracy (%) under all cyclic rotations of the options, per modality.", None)),
    ])


NOTEBOOKS["09_uncertainty_and_guarantees"] = notebook(
    "09_uncertainty_and_guarantees",
    "09 · Uncertainty estimators, audio reliance and abstention with a guarantee",
    "Beyond the paper, round two (definitions in `docs/abstention.md`). Uncertainty estimators side by side, each "
    "a confidence per item of the baseline's answers: the greedy answer's sequence probability and its "
    "length-normalised form, predictive entropy over the K@N samples, discrete semantic entropy over the judged "
    "K@N answers, P(True) after a fixed verification prompt, verbalised confidence (0-100, parsed strictly), "
    "ranked per modality on AURC (against chance) and on Rel at the IDK prompt's rejection rate, beside the "
    "scores of notebook 08. Audio reliance: the same questions with silent and with white-noise audio "
    "(accuracy without audio, refusals where nothing can be heard). Abstention with a finite-sample guarantee: "
    "Learn-then-Test thresholds for (alpha, delta) on a calibration split, their selective risk and coverage "
    "on the test split, and across modalities. Reuses the runs, K@N samples and option scores of notebooks 01-08.",
    KNN_PARAMETERS + '''
risk_alpha: float = 0.1  # the guarantee: at most this share of wrong answers among the answered ones ...
risk_delta: float = 0.1  # ... with probability at least 1 - risk_delta over the calibration set
risk_procedure: str = "bonferroni"  # Learn-then-Test's family-wise procedure: "bonferroni" or "fixed-sequence"
calibrate_on: str = "sound"  # the modality whose threshold is carried to the others
verbalized_max_new_tokens: int = 8  # reply length of the 0-100 verbalised-confidence prompt
chance_permutations: int = 1000  # random orders behind the "no better than chance" p-value of each AURC''',
    [
        ("code", 'from reliable_lalm.experiments.uncertainty import UncertaintyStudy\n'
                 'from reliable_lalm.reporting import uncertainty as uncertainty_figures\n'
                 'study = UncertaintyStudy(exp, knn_samples=knn_samples, knn_temperature=knn_temperature,\n'
                 '                         knn_top_p=knn_top_p, verbalized_max_new_tokens=verbalized_max_new_tokens,\n'
                 '                         alpha=risk_alpha, delta=risk_delta, procedure=risk_procedure,\n'
                 '                         calibrate_on=calibrate_on, permutations=chance_permutations)\n'
                 'study.confidence_frame().head()'),
        ("md", "## Uncertainty estimators side by side"),
        md("Estimators ranked per modality", "Each estimator orders the baseline's answers from most to least "
           "confident. A lower AURC is better, and the p-value says whether it beats a random order; a higher Rel "
           "at the IDK prompt's rejection rate is better. The ranking can change with the model and the benchmark."),
        ("code", 'estimators = study.estimator_table()\n'
                 + table_cell("estimators", "09_uncertainty__estimators",
                              "Per modality and estimator: AURC against chance (permutation p-value), E-AURC, ECE, Rel (%) at the IDK prompt's rejection rate, and ranks.", None)),
        md("AURC against chance", "Each estimator's AURC per modality beside the AURC of a random order. "
           "A bar well below the chance mark means the estimator knows when the model is wrong; lower is better."),
        ("code", 'reporting.save_figure(uncertainty_figures.estimator_aurc_figure(estimators), "09_uncertainty__estimators_aurc",\n'
                 '                      output.tag, data=uncertainty_figures.estimator_aurc_data(estimators))'),
        md("Unparseable verbalised confidence", "How many replies to the 0-100 confidence prompt were not a number "
           "in range. Those items count as missing, never as a guessed value; fewer is better."),
        ("code", 'verbalized_missing = study.missing_table()\n'
                 + table_cell("verbalized_missing", "09_uncertainty__verbalized_missing",
                              "Verbalised-confidence replies that are not a number from 0 to 100 (missing, not guessed).", None)),
        ("md", "## Audio reliance: the same questions without usable audio"),
        md("Accuracy and refusals without usable audio", "Accuracy with silence or noise in place of the clip is "
           "the shortcut rate: a lower one means the questions need the audio. Refusing a question about a silent "
           "clip is the right behaviour, so a higher refusal rate under the controls is better."),
        ("code", 'audio_reliance = study.audio_reliance_table()\n'
                 + table_cell("audio_reliance", "09_uncertainty__audio_reliance",
                              "Accuracy (%) with the audio, with silence and with white noise at the clip's RMS; IDK-prompt refusal rate (%) on each.", None)),
        md("Items answered right without the audio", "The questions the model answers correctly both with the "
           "clip and under a control: candidates for text-only shortcuts, listed by id to inspect."),
        ("code", 'audio_reliance_items = study.audio_reliance_items()\n'
                 + table_cell("audio_reliance_items", "09_uncertainty__audio_reliance_items",
                              "Items the baseline answers correctly with the audio and also under a control.", None)),
        ("md", "## Abstention with a guarantee (Learn-then-Test, binomial tail bound)"),
        md("Thresholds with a guarantee", "Each threshold is chosen on the calibration split so that at most "
           "alpha of the answered items are wrong, with probability 1 - delta. The test columns show whether that "
           "holds on held-out items and on other modalities; higher coverage at a risk within alpha is better."),
        ("code", 'risk_control = study.risk_control_table()\n'
                 'display(Markdown(risk_control.attrs["caption"]))\n'
                 + table_cell("risk_control", "09_uncertainty__risk_control",
                              "Learn-then-Test thresholds per estimator: coverage and selective risk (%) on the calibration and test splits.", None)),
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
