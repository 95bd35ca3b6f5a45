"""``rlalm demo``: the embedded default (synthetic benchmark + demo model).

- ``rlalm demo benchmark [--split test|train]``: generate (or reuse) the synthetic benchmark.
- ``rlalm demo train [--out DIR] [--steps N] [--expect CARD_METRICS]``: train the demo model
  (resumable), evaluate it greedily on the synthetic test split and write its model card; with
  ``--expect``, compare the accuracies with a card's (e.g. the shipped one) and fail beyond
  :data:`RETRAIN_TOLERANCE_POINTS`.
- ``rlalm demo evaluate [--model DIR]``: greedy baseline accuracy per modality on the test split.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reliable_lalm import paths

CARD_FILE = "README.md"
CARD_METRICS_FILE = "card_metrics.json"
# `rlalm demo train` must reproduce the shipped card's accuracies within this many points per
# modality: a retrain on another CPU or library build takes other floating-point paths.
RETRAIN_TOLERANCE_POINTS = 5.0


def evaluate_demo(model_dir: str | Path | None = None, *, split: str = "test", batch_size: int = 32,
                  progress: bool = True) -> dict[str, Any]:
    """Greedy accuracy of a demo checkpoint on the synthetic split, per modality, with the baseline
    prompt, and its rejection rate with the IDK prompt.

    Goes through the same engine, prompts, normalizer and metrics as the notebooks.
    """
    import tempfile
    from collections import Counter

    from reliable_lalm.methods import runners as inference
    from reliable_lalm.models import base as models_base, qwen2_audio
    from reliable_lalm.models import hf_loading as modeling
    from reliable_lalm.core import scoring
    from reliable_lalm.demo import synthetic
    from reliable_lalm.core.items import load_benchmark
    from reliable_lalm.core.results import ResultStore

    model_dir = Path(model_dir or paths.DEMO_MODEL_DIR)
    bench = load_benchmark(synthetic.default_benchmark(split))
    model, processor = modeling.load_model_and_processor(model_dir, device="cpu")
    backend = qwen2_audio.HFBackend(model, processor, batch_size=batch_size)
    settings = models_base.GenerationSettings(max_new_tokens=16)
    preds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("baseline", "idk"):
            store_path = Path(tmp) / method
            inference.run_method(backend, bench.items, method, store_path, settings=settings, progress=progress)
            records = ResultStore(store_path).by_item(0)
            preds[method] = [{**item.to_record(), "id": item.id, "choices": list(item.choices),
                              "model_output": records[item.id].get("model_output") or ""} for item in bench.items]
    scores = scoring.score_records(preds["baseline"], keep_items=True)
    idk_scores = scoring.score_records(preds["idk"], keep_items=True)
    answers = Counter(p["model_output"] for p in preds["baseline"])
    most_common, count = answers.most_common(1)[0]
    def chance(items) -> float:  # expected accuracy of a uniform random choice
        return sum(1 / len(it.choices) for it in items) / max(1, len(items))

    return {
        "split": split, "n": scores["n"], "acc": scores["acc"], "n_invalid": scores["n_invalid"],
        "chance_acc": chance(bench.items),
        "idk_prompt_rej": idk_scores["rej"], "idk_prompt_acc": idk_scores["acc"],
        "by_task": {task: {"n": s["n"], "acc": s["acc"], "n_invalid": s["n_invalid"],
                           "chance_acc": chance([it for it in bench.items if it.task == task]),
                           "idk_prompt_rej": idk_scores["by_task"][task]["rej"],
                           "idk_prompt_acc": idk_scores["by_task"][task]["acc"]}
                    for task, s in scores["by_task"].items()},
        "most_common_output": most_common,
        "most_common_output_share": count / len(preds["baseline"]),
        "by_difficulty": _by_difficulty(bench.items, scores["items"], idk_scores["items"]),
    }


def _difficulty_order(levels) -> list[str]:
    from reliable_lalm.demo.synthetic import DIFFICULTIES

    return sorted(levels, key=lambda d: (list(DIFFICULTIES) + [d]).index(d))


def _by_difficulty(items, baseline_items, idk_items) -> dict[str, dict[str, Any]]:
    """Baseline accuracy and IDK-prompt rejection rate per difficulty level: do refusals follow
    difficulty?"""
    difficulty = {it.id: it.difficulty or "unknown" for it in items}
    out: dict[str, dict[str, Any]] = {}
    for level in _difficulty_order(set(difficulty.values())):
        base = [x for x in baseline_items if difficulty[x["id"]] == level]
        idk = [x for x in idk_items if difficulty[x["id"]] == level]
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


def write_card(model_dir: Path, metrics: dict[str, Any], training: dict[str, Any]) -> None:
    """Write the model card (README.md) and its metrics (card_metrics.json).

    ``training`` is the checkpoint's training.json; its optional ``note`` and ``retrain_check`` (a
    measured retrain: ``{"summary": str}``) are quoted in the card.
    """
    by_task = metrics["by_task"]
    levels = metrics.get("by_difficulty", {})  # card_metrics.json sorts keys: order them by difficulty again
    difficulty_rows = "\n".join(f"| {level} | {levels[level]['n']} | {100 * levels[level]['acc']:.2f} | "
                                 f"{100 * levels[level]['idk_prompt_rej']:.2f} |" for level in _difficulty_order(levels))
    check = training.get("retrain_check")
    retrain = (f"Verified: {check['summary']}" if check else "This tolerance is not yet verified.")
    rows = "\n".join(f"| {task} | {s['n']} | {100 * s['chance_acc']:.2f} | {100 * s['acc']:.2f} | {s['n_invalid']} | "
                     f"{100 * s['idk_prompt_acc']:.2f} | {100 * s['idk_prompt_rej']:.2f} |"
                     for task, s in by_task.items())
    cfg = training["config"]
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
- Training: {cfg['steps']} steps, batch {cfg['batch_size']}, AdamW lr {cfg['lr']} (cosine), seed {cfg['seed']};
  prompt formats and shares: {json.dumps(cfg['mix'])}; loss averaged per example; {100 * cfg['unanswerable_share']:.0f}% of
  IDK-instructed (and MCoT) examples have their audio replaced by noise (half of them with the signal
  buried 20-35 dB below it) and the target `IDK`; of the others, {100 * cfg.get('hard_idk_share', 0):.0f}% of those on
  *hard* items (the noisiest, subtlest level) also have the target `IDK`, so that refusals under
  the IDK prompt follow difficulty.

## Measured greedy results on the synthetic test split

Baseline prompt (paper Table 4): accuracy and outputs the rule-based normalizer could not map;
IDK prompt (Table 5): accuracy and rejection rate.

| modality | items | chance % | accuracy % | invalid outputs | IDK prompt: accuracy % | IDK prompt: rejection % |
| --- | --- | --- | --- | --- | --- | --- |
{rows}
| total | {metrics['n']} | {100 * metrics['chance_acc']:.2f} | {100 * metrics['acc']:.2f} | {metrics['n_invalid']} | {100 * metrics['idk_prompt_acc']:.2f} | {100 * metrics['idk_prompt_rej']:.2f} |

Chance: the expected accuracy of a uniformly random choice. Most frequent output:
`{metrics['most_common_output']}` ({100 * metrics['most_common_output_share']:.1f}% of answers).

By difficulty (all modalities):

| difficulty | items | accuracy % | IDK prompt: rejection % |
| --- | --- | --- | --- |
{difficulty_rows}

{training.get('note', '')}
`tests/test_demo_model.py` reloads this checkpoint offline and reproduces these numbers exactly.
A retrain with `rlalm demo train --expect <this folder>/card_metrics.json` checks that it lands
within {RETRAIN_TOLERANCE_POINTS:g} points of every accuracy and rejection rate above (floating-point paths differ
across CPUs and library builds). {retrain}
"""
    (model_dir / CARD_FILE).write_text(card)
    (model_dir / CARD_METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo_command", required=True)
    b = sub.add_parser("benchmark", help="generate (or reuse) the synthetic benchmark")
    b.add_argument("--split", default="test", choices=["test", "train"])
    t = sub.add_parser("train", help="train the demo model, evaluate it and write its card")
    t.add_argument("--out", type=Path, default=paths.DEMO_MODEL_DIR)
    t.add_argument("--work-dir", type=Path, default=None, help="resumable checkpoints (default: beside --out)")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--expect", type=Path, default=None,
                   help=f"card_metrics.json to compare with; exit 1 beyond {RETRAIN_TOLERANCE_POINTS:g} points")
    e = sub.add_parser("evaluate", help="greedy accuracy per modality on the synthetic test split")
    e.add_argument("--model", type=Path, default=paths.DEMO_MODEL_DIR)
    e.add_argument("--split", default="test", choices=["test", "train"])


def run(args: argparse.Namespace) -> int:
    if args.demo_command == "benchmark":
        from reliable_lalm.demo import synthetic

        print(synthetic.default_benchmark(args.split))
        return 0
    if args.demo_command == "train":
        from reliable_lalm.demo.train import DemoTrainConfig, train_demo

        cfg = DemoTrainConfig()
        if args.steps is not None:
            cfg.steps = args.steps
        if args.seed is not None:
            cfg.seed = args.seed
        expected = json.loads(args.expect.read_text()) if args.expect else None  # read before --out is written
        out = train_demo(args.out, cfg, work_dir=args.work_dir)
        metrics = evaluate_demo(out)
        write_card(out, metrics, json.loads((out / "training.json").read_text()))
        print(json.dumps(metrics, indent=2))
        if expected is not None:
            lines, problems = compare_to_card(metrics, expected)
            print(f"retrain vs {args.expect} (tolerance {RETRAIN_TOLERANCE_POINTS:g} points):")
            print("\n".join(lines))
            if problems:
                print(f"{len(problems)} value(s) outside the tolerance")
                return 1
            print("all within the tolerance")
        return 0
    metrics = evaluate_demo(args.model, split=args.split)
    print(json.dumps(metrics, indent=2))
    return 0
