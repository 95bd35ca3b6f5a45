"""The demo model's card: what ``rlalm demo train`` / ``rlalm demo evaluate`` measure on the synthetic
split (:func:`evaluate_demo`), the card written from it (:func:`write_card`), and the comparison of
a retrain with the shipped card (:func:`compare_to_card`, within :data:`RETRAIN_TOLERANCE_POINTS`).
The commands themselves are :mod:`reliable_lalm.cli.demo`.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from reliable_lalm import paths
from reliable_lalm.core import scoring
from reliable_lalm.core.abstention import sample_agreement_from_outputs
from reliable_lalm.core.items import load_benchmark
from reliable_lalm.core.results import ResultStore
from reliable_lalm.core.scoring import score_reference_baselines
from reliable_lalm.demo import synthetic
from reliable_lalm.demo.synthetic import DIFFICULTIES
from reliable_lalm.methods import execution as inference
from reliable_lalm.models import base as models_base
from reliable_lalm.models import hf_loading as modeling
from reliable_lalm.models import qwen2_audio

CARD_FILE = "README.md"
CARD_METRICS_FILE = "card_metrics.json"
# `rlalm demo train` must reproduce the shipped card's accuracies within this many points per
# modality: a retrain on another CPU or library build takes other floating-point paths.
RETRAIN_TOLERANCE_POINTS = 5.0


K_AT_N_SAMPLES = 5  # K@N sampling of the card: N samples per item at temperature 1 (the paper's defaults)
K_AT_N_TEMPERATURE = 1.0


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def text_only_baselines(items, prior: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Rules that never hear the audio, each an accuracy over ``items`` (total and per modality).

    - ``random``: the expected accuracy of a uniformly random option (chance);
    - ``most_frequent_option``: MMAU's "Most Frequent Choice" row, an oracle fitted on ``items``
      themselves: per modality, the option text most often correct there;
    - ``question_text_option`` / ``question_text_position``: classifiers of the question text
      fitted on the training pool (``prior``, from training.json): for each question wording, the
      option text (or the option position, given the number of options) most often correct in
      training.
    """
    def per_task(hits: list[float]) -> dict[str, float]:
        out = {"total": _mean(hits)}
        for task in dict.fromkeys(it.task for it in items):
            out[task] = _mean(h for h, it in zip(hits, items) if it.task == task)
        return out

    rows = {"random": per_task([1 / len(it.choices) for it in items])}
    frequent = score_reference_baselines(items)["Most Frequent Choice"]
    rows["most_frequent_option"] = {"total": frequent["acc"], **{t: s["acc"] for t, s in frequent["by_task"].items()}}
    if prior:
        answers, offered, positions = prior["answers"], prior["offered"], prior["positions"]

        def option_rate(it, c):  # how often option text c was right when offered with this question
            n = offered.get(it.question, {}).get(c, 0)
            return answers.get(it.question, {}).get(c, 0) / n if n else 0.0

        def position_rate(it, i):
            return positions.get(f"{it.question}|{len(it.choices)}", {}).get(str(i), 0)

        by_text, by_position = [], []
        for it in items:
            choices = list(it.choices)
            best = max(range(len(choices)), key=lambda i: (option_rate(it, choices[i]), -i))
            by_text.append(float(choices[best] == it.answer))
            best = max(range(len(choices)), key=lambda i: (position_rate(it, i), -i))
            by_position.append(float(choices[best] == it.answer))
        rows["question_text_option"] = per_task(by_text)
        rows["question_text_position"] = per_task(by_position)
    return rows


def evaluate_demo(model_dir: str | Path | None = None, *, split: str = "test", batch_size: int = 32,
                  progress: bool = True, k_at_n: bool = True) -> dict[str, Any]:
    """What the demo card reports, measured on the synthetic split.

    Greedy accuracy with the baseline prompt per modality and difficulty; the IDK prompt's accuracy
    and rejection rate, also on the items the baseline prompt gets right and wrong; the same model
    with silent audio; the rules that ignore the audio (:func:`text_only_baselines`); and the
    agreement of ``K_AT_N_SAMPLES`` sampled answers (the modal answer's share) on the items answered
    right and wrong. Goes through the same engine, prompts, normalizer and metrics as the notebooks.
    """
    model_dir = Path(model_dir or paths.DEMO_MODEL_DIR)
    bench = load_benchmark(synthetic.default_benchmark(split))
    items = bench.items
    model, processor = modeling.load_model_and_processor(model_dir, device="cpu")
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=batch_size)
    settings = models_base.GenerationSettings(max_new_tokens=16)
    preds: dict[str, list[dict[str, Any]]] = {}

    def records_of(store_path, run_items, index=0):
        records = ResultStore(store_path).by_item(index)
        return [{**it.to_record(), "id": it.id, "choices": list(it.choices),
                 "model_output": records[it.id].get("model_output") or ""} for it in run_items]

    samples: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("baseline", "idk"):
            store_path = Path(tmp) / method
            inference.run_method(backend, items, method, store_path, settings=settings, progress=progress)
            preds[method] = records_of(store_path, items)
        silent_items = []
        for it in items:  # the same clips, silent: what the model answers from the text alone
            path = Path(tmp) / "silent" / f"{it.id}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(str(path), np.zeros(sf.info(it.audio_path).frames, dtype=np.float32), synthetic.SR)
            silent_items.append(dataclasses.replace(it, audio_path=str(path)))
        inference.run_method(backend, silent_items, "baseline", Path(tmp) / "silent-run", settings=settings,
                             progress=progress)
        preds["silent"] = records_of(Path(tmp) / "silent-run", silent_items)
        if k_at_n:
            k_at_n_settings = models_base.GenerationSettings(max_new_tokens=16, do_sample=True,
                                                          temperature=K_AT_N_TEMPERATURE, seed=0)
            inference.sample_k_at_n(backend, items, Path(tmp) / "k_at_n", n_samples=K_AT_N_SAMPLES, settings=k_at_n_settings,
                                 progress=progress)
            store = ResultStore(Path(tmp) / "k_at_n")
            for record in store.records():
                samples.setdefault(str(record["item_id"]), []).append((int(record.get("sample_index", 0)),
                                                                       record.get("model_output") or ""))
    scores = scoring.score_records(preds["baseline"], keep_items=True)
    idk_scores = scoring.score_records(preds["idk"], keep_items=True)
    silent_scores = scoring.score_records(preds["silent"])
    outcome = {x["id"]: x["outcome"] for x in scores["items"]}
    idk_outcome = {x["id"]: x["outcome"] for x in idk_scores["items"]}
    answers = Counter(p["model_output"] for p in preds["baseline"])
    most_common, count = answers.most_common(1)[0]

    def chance(run_items) -> float:  # expected accuracy of a uniform random choice
        return sum(1 / len(it.choices) for it in run_items) / max(1, len(run_items))

    def idk_split(run_items) -> dict[str, Any]:
        """IDK-prompt rejection rate on the items the baseline prompt answers right and wrong."""
        right = [idk_outcome[it.id] == "rejected" for it in run_items if outcome[it.id] == "correct"]
        wrong = [idk_outcome[it.id] == "rejected" for it in run_items if outcome[it.id] != "correct"]
        return {"idk_prompt_rej_on_right": _mean(right), "idk_prompt_rej_on_wrong": _mean(wrong)}

    agreement: dict[str, Any] = {}
    if samples:
        by_item = {it.id: sample_agreement_from_outputs([o for _, o in sorted(samples[it.id])], list(it.choices))
                   for it in items}
        for name, keep in (("right", lambda o: o == "correct"), ("wrong", lambda o: o != "correct")):
            agreement[f"on_{name}"] = _mean(by_item[it.id].agreement for it in items if keep(outcome[it.id]))
        agreement["n"] = K_AT_N_SAMPLES
        agreement["temperature"] = K_AT_N_TEMPERATURE
    return {
        "split": split, "n": scores["n"], "acc": scores["acc"], "n_invalid": scores["n_invalid"],
        "chance_acc": chance(items),
        "idk_prompt_rej": idk_scores["rej"], "idk_prompt_acc": idk_scores["acc"], **idk_split(items),
        "silent_audio_acc": silent_scores["acc"],
        "by_task": {task: {"n": s["n"], "acc": s["acc"], "n_invalid": s["n_invalid"],
                           "chance_acc": chance([it for it in items if it.task == task]),
                           "idk_prompt_rej": idk_scores["by_task"][task]["rej"],
                           "idk_prompt_acc": idk_scores["by_task"][task]["acc"],
                           **idk_split([it for it in items if it.task == task]),
                           "silent_audio_acc": silent_scores["by_task"][task]["acc"],
                           "by_difficulty": _by_difficulty([it for it in items if it.task == task],
                                                           scores["items"], idk_scores["items"])}
                    for task, s in scores["by_task"].items()},
        "baselines": text_only_baselines(items, _training_prior(model_dir)),
        "knn_agreement": agreement,  # the shipped card (inside the hashed model folder) names it so
        "most_common_output": most_common,
        "most_common_output_share": count / len(preds["baseline"]),
        "by_difficulty": _by_difficulty(items, scores["items"], idk_scores["items"]),
    }


def _training_prior(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / "training.json").read_text()).get("answer_prior")
    except (OSError, ValueError):
        return None


def _difficulty_order(levels) -> list[str]:
    return sorted(levels, key=lambda d: (list(DIFFICULTIES) + [d]).index(d))


def _by_difficulty(items, baseline_items, idk_items) -> dict[str, dict[str, Any]]:
    """Baseline accuracy and IDK-prompt rejection rate per difficulty level: do refusals follow
    difficulty?"""
    difficulty = {it.id: it.difficulty or "unknown" for it in items}
    out: dict[str, dict[str, Any]] = {}
    for level in _difficulty_order(set(difficulty.values())):
        base = [x for x in baseline_items if difficulty.get(x["id"]) == level]
        idk = [x for x in idk_items if difficulty.get(x["id"]) == level]
        out[level] = {"n": len(base), "acc": sum(x["outcome"] == "correct" for x in base) / max(1, len(base)),
                      "idk_prompt_rej": sum(x["outcome"] == "rejected" for x in idk) / max(1, len(idk))}
    return out


def compare_to_card(measured: dict[str, Any], expected: dict[str, Any],
                    tolerance_points: float = RETRAIN_TOLERANCE_POINTS) -> tuple[list[str], list[str]]:
    """Lines comparing a retrained checkpoint's accuracies with a card's, and the problems: each
    accuracy (total and per modality, baseline and IDK prompt) and the IDK-prompt rejection rate
    must lie within ``tolerance_points`` percentage points."""
    lines, problems = [], []
    rows = [("total", measured, expected)] + [(task, measured["by_task"][task], expected["by_task"][task])
                                             for task in expected["by_task"]]
    for name, got, want in rows:
        for key in ("acc", "idk_prompt_acc", "idk_prompt_rej"):
            diff = 100 * (got[key] - want[key])
            line = f"{name:<7} {key:<15} expected {100 * want[key]:6.2f}  measured {100 * got[key]:6.2f}  diff {diff:+6.2f}"
            lines.append(line)
            if abs(diff) > tolerance_points:
                problems.append(line)
    return lines, problems


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def best_prior_baseline(metrics: dict[str, Any], task: str = "total") -> tuple[str, float]:
    """The strongest rule that ignores the audio on ``task`` (name, accuracy): the card's bar."""
    rows = {k: v[task] for k, v in metrics.get("baselines", {}).items() if v.get(task) is not None}
    name = max(rows, key=rows.get)
    return name, rows[name]


def write_card(model_dir: Path, metrics: dict[str, Any], training: dict[str, Any]) -> None:
    """Write the model card (README.md) and its metrics (card_metrics.json).

    ``training`` is the checkpoint's training.json; its optional ``note`` and ``retrain_check`` (a
    measured retrain: ``{"summary": str}``) are quoted in the card.
    """
    by_task = metrics["by_task"]
    tasks = list(by_task)
    levels = metrics.get("by_difficulty", {})  # card_metrics.json sorts keys: order them by difficulty again
    order = _difficulty_order(levels)
    check = training.get("retrain_check")
    retrain = (f"Verified: {check['summary']}" if check else "This tolerance is not yet verified.")
    base = metrics["baselines"]

    def row(name, s, key):
        best_name, best = best_prior_baseline(metrics, key)
        return (f"| {name} | {s['n']} | {_pct(base['random'][key])} | {_pct(base['most_frequent_option'][key])} | "
                f"{_pct(base.get('question_text_option', {}).get(key))} | {_pct(base.get('question_text_position', {}).get(key))} | "
                f"{_pct(s['silent_audio_acc'])} | **{_pct(s['acc'])}** | {100 * (s['acc'] - best):+.1f} | {s['n_invalid']} |")

    rows = "\n".join([row(t, by_task[t], t) for t in tasks] + [row("total", metrics, "total")])
    idk_rows = "\n".join(
        f"| {name} | {_pct(s['acc'])} | {_pct(s['idk_prompt_acc'])} | {_pct(s['idk_prompt_rej'])} | "
        f"{_pct(s['idk_prompt_rej_on_right'])} | {_pct(s['idk_prompt_rej_on_wrong'])} |"
        for name, s in [(t, by_task[t]) for t in tasks] + [("total", metrics)])
    diff_rows = "\n".join(
        f"| {name} | " + " | ".join(f"{_pct(lv[d]['acc'])}" for d in order) + " | "
        + " | ".join(f"{_pct(lv[d]['idk_prompt_rej'])}" for d in order) + " |"
        for name, lv in [(t, by_task[t]["by_difficulty"]) for t in tasks] + [("total", levels)])
    k_at_n = metrics.get("knn_agreement") or {}
    k_at_n_line = (f"K@N agreement (the modal answer's share of {k_at_n['n']} samples at temperature {k_at_n['temperature']:g}, "
                f"baseline prompt): {_pct(k_at_n['on_right'])} % on the items the greedy answer gets right, "
                f"{_pct(k_at_n['on_wrong'])} % on those it gets wrong." if k_at_n else "")
    cfg = training["config"]
    model_cfg = training.get("model_config") or {}
    sizes = (f"audio encoder {model_cfg['encoder_layers']} layers of width {model_cfg['encoder_d_model']}, "
             f"text decoder {model_cfg['text_layers']} layers of width {model_cfg['text_hidden_size']}; "
             if model_cfg else "")
    card = f"""# reliable-lalm demo model

A tiny `Qwen2AudioForConditionalGeneration` (the class of Qwen/Qwen2-Audio-7B-Instruct) built and
trained by `rlalm demo train` (library: `reliable_lalm.demo.model`, `reliable_lalm.demo.train`) on
the synthetic three-modality benchmark's training generator (`reliable_lalm.demo.synthetic`, seed
{cfg['pool_seed']}, {cfg['pool_per_task']} items per modality). It is not a useful audio model: it
exists so that every notebook of this repository runs offline on a laptop CPU through the very
code that runs the 7B model.

- Tokenizer: byte-level BPE (`Qwen2Tokenizer`) trained locally, with the Qwen2-Audio special tokens.
- Processor: `Qwen2AudioProcessor` with a `WhisperFeatureExtractor` of 128 mel bins and a 4 s window
  (the real model: 30 s); the chat template of Qwen2-Audio-7B-Instruct.
- Model: {sizes}{training.get('n_parameters', 0) / 1e6:.2f} M parameters.
- Training: {cfg['steps']} steps, batch {cfg['batch_size']}, AdamW lr {cfg['lr']} (cosine), seed {cfg['seed']};
  prompt formats and shares: {json.dumps(cfg['mix'])}; loss averaged per example.
- Audio first: {cfg.get('audio_pretrain_steps', 0)} steps of the audio encoder and projector alone (stage 1), then all
  the steps above with a training-only auxiliary loss (weight {cfg.get('audio_answer_weight', 0):g}): the mean of an
  item's projected audio features must point, among the tied embeddings of its options' first
  tokens, to the answer's. Neither adds a parameter to the shipped model.
- No IDK rule: under the IDK prompt (and MCoT) the target is `IDK` exactly when the model, as it
  is at that training step, answers that training item wrong with the baseline prompt (its
  highest-scoring option), else the answer. No difficulty label, noise clip or share decides a
  refusal; the model learns to refuse what it does not know. The share of IDK targets fell from
  {_pct(training.get('idk_target_share_first'))} % of those examples early in training to
  {_pct(training.get('idk_target_share_last'))} % at the end.
- The synthetic answers are balanced: within each question type every class and every option
  position is correct equally often (test split: exactly, within one; training: in expectation),
  and every question of a type has the same number of options.

## Measured greedy results on the synthetic test split

Accuracy (%) with the baseline prompt (paper Table 4) beside the rules that never hear the audio:
a random option (chance); MMAU's "Most Frequent Choice" (the option text most often correct in
the modality, an oracle fitted on the test split itself); two question-text classifiers fitted
on the training pool (for each question wording, the option text, or the option position, most
often correct there); and this model with the clips replaced by silence. "margin": accuracy minus
the best of these rules.

| modality | items | chance | most frequent option | question text: option | question text: position | silent audio | accuracy | margin (points) | invalid outputs |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Most frequent output: `{metrics['most_common_output']}` ({100 * metrics['most_common_output_share']:.1f}% of answers).

Accuracy by difficulty (%), then the IDK prompt's rejection rate (%) by difficulty:

| modality | {' | '.join(f'acc {d}' for d in order)} | {' | '.join(f'IDK rej {d}' for d in order)} |
| --- | {' | '.join('---' for _ in order)} | {' | '.join('---' for _ in order)} |
{diff_rows}

What each stage contributes: the base model's accuracy (baseline prompt); the IDK prompt (paper
Table 5, training-free) with its rejection rate on the items the base model answers right and on
those it answers wrong:

| modality | base accuracy | IDK prompt: accuracy | IDK prompt: rejection | rejection on base-right items | rejection on base-wrong items |
| --- | --- | --- | --- | --- | --- |
{idk_rows}

{k_at_n_line}
K@N IDK SFT (the LoRA stage) is trained and measured by the notebooks (`tables/demo/`).

{training.get('note', '')}
`tests/test_demo_model.py` reloads this checkpoint offline and reproduces these numbers exactly.
A retrain with `rlalm demo train --expect <this folder>/card_metrics.json` checks that it lands
within {RETRAIN_TOLERANCE_POINTS:g} points of every accuracy and rejection rate of the first and third tables
(floating-point paths differ across CPUs and library builds). {retrain}
"""
    (model_dir / CARD_FILE).write_text(card)
    (model_dir / CARD_METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
