"""Retrain the LoRA adapters over several seeds and check, statistically, that the shipped
adapters' numbers are what retraining gives (``rlalm retrain``, ``make retrain``; the command line
is :mod:`reliable_lalm.cli.retrain`).

Why statistical: LoRA SFT is not bitwise portable across CPUs (issue 16), so a retrain cannot be
compared byte for byte; what must hold is that the shipped adapter is a typical draw of the
training procedure. For every SFT cell of the profile's ``04_sft`` runs (train modality x test
modality: Acc, Tru, Rej, Rel in %) the command trains one adapter per seed (``seed`` of the LoRA
SFT: lora_A initialisation, example order, dropout), evaluates it, and reports mean ± sd over the
seeds beside the shipped adapter's value (the shipped adapter is evaluated, not retrained).

Tolerance: a cell passes when ``|shipped - mean| <= 3 * sd + 100 / n`` (n: items of the test
modality; ``100 / n`` is one item in percent, the resolution of the metric, which also keeps a
cell whose seeds all agree from failing on a one-item move). With fewer than two seeds there is no
sd and the command refuses to judge. The report goes to ``runs/<profile>/retrain.{json,csv,md}``
(never to the committed ``tables/``); the exit status is 1 when a cell fails.

``--alpha-sweep`` adds the adapters of ``07_lora_alpha_ablation`` (train modality x alpha).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from reliable_lalm import paths
from reliable_lalm.core.numerics import numerics_description
from reliable_lalm.runner.notebook import experiment_from_parameters
from reliable_lalm.runner.outputs import profile_parameter_sets

METRICS = ("acc", "tru", "rej", "rel")
SIGMAS = 3.0


def crossmodal_from_parameters(params: Mapping[str, Any], *, seed: int | None = None, use_shipped: bool = True,
                               progress: bool = False):
    """The notebooks' ``Experiment`` + ``exp.crossmodal(...)`` for one parameter set of 04/05/07
    (the same construction as their setup cells), optionally with another SFT seed."""
    exp = experiment_from_parameters(params)
    sft = dict(learning_rate=params["sft_learning_rate"], epochs=params["sft_epochs"],
               batch_size=params["sft_batch_size"], rank=params["lora_rank"], alpha=params["lora_alpha"],
               alpha_reading=params["lora_alpha_reading"], lora_targets=params["lora_targets"])
    if seed is not None:
        sft["seed"] = seed
    cm = exp.crossmodal(k_at_n_samples=params["k_at_n_samples"], k_at_n_k=params["k_at_n_k"],
                        k_at_n_temperature=params["k_at_n_temperature"], k_at_n_top_p=params["k_at_n_top_p"], sft=sft)
    cm.config.use_shipped = use_shipped
    cm.config.progress = progress
    cm.config.n_boot = 0  # intervals are not compared here; the bootstrap is the slow part of scoring
    return cm


def planned_trainings(profile: str, *, alpha_sweep: bool = False) -> list[tuple[dict[str, Any], str, float | None]]:
    """(notebook parameters, train modality, alpha) of every adapter the profile's notebooks train."""
    out: list[tuple[dict[str, Any], str, float | None]] = []
    for params in profile_parameter_sets(profile, "04_sft") or []:
        out.append((params, params["modality"], None))
    if alpha_sweep:
        for params in profile_parameter_sets(profile, "07_lora_alpha_ablation") or []:
            for alpha in params["alphas"]:
                out.append((params, params["train_modality"], float(alpha)))
    return out


def _cells(cm, task: str, alpha: float | None, tests: Sequence[str]) -> dict[str, dict[str, float]]:
    rows = cm.run_cell(task, list(tests), alpha=alpha)
    return {row["test"]: {**{m: 100.0 * float(row[m]) for m in METRICS}, "n": int(row["n"])} for row in rows}


def judge(shipped: float, values: Sequence[float], n: int) -> dict[str, Any]:
    """mean, sd (sample, ddof=1), the tolerance and whether ``shipped`` is within it."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    tolerance = SIGMAS * sd + 100.0 / n
    return {"shipped": shipped, "mean": mean, "sd": sd, "values": list(values), "tolerance": tolerance,
            "ok": bool(abs(shipped - mean) <= tolerance)}


def retrain(profile: str = "demo", *, seeds: Sequence[int] = (0, 1, 2, 3, 4), alpha_sweep: bool = False,
            tests: Sequence[str] = ("sound", "music", "speech"), out_dir: str | Path | None = None,
            stream=None) -> dict[str, Any]:
    """Train every planned adapter once per seed, evaluate, compare with the shipped adapters."""
    stream = stream or sys.stderr
    if len(seeds) < 2:
        raise ValueError("retrain needs at least two seeds for a standard deviation (five or more recommended)")
    t0 = time.perf_counter()
    cells: list[dict[str, Any]] = []
    for params, task, alpha in planned_trainings(profile, alpha_sweep=alpha_sweep):
        reference_cm = crossmodal_from_parameters(params, use_shipped=True)
        shipped_dir = reference_cm.shipped_adapter(task, alpha)
        reference = _cells(reference_cm, task, alpha, tests)
        per_seed = []
        for seed in seeds:
            print(f"retrain {task} alpha={alpha if alpha is not None else 'table9'} seed={seed}", file=stream, flush=True)
            per_seed.append(_cells(crossmodal_from_parameters(params, seed=seed, use_shipped=False), task, alpha, tests))
        for test in tests:
            for metric in METRICS:
                verdict = judge(reference[test][metric], [s[test][metric] for s in per_seed], reference[test]["n"])
                cells.append({"train": task, "alpha": alpha, "test": test, "metric": metric, "n": reference[test]["n"],
                              "reference": "shipped" if shipped_dir is not None else "seed 0 of the config (no shipped adapter)",
                              **verdict})
    failed = [c for c in cells if not c["ok"]]
    report = {"profile": profile, "seeds": list(seeds), "alpha_sweep": alpha_sweep,
              "rule": f"|shipped - mean| <= {SIGMAS:g} * sd + 100 / n (sd over seeds, ddof=1; 100/n = one item)",
              "cells": cells, "failed": len(failed), "status": "ok" if not failed else "failed",
              "seconds": round(time.perf_counter() - t0, 1), "numerics": numerics_description()}
    out = Path(out_dir) if out_dir is not None else paths.runs_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    lines = ["| train | alpha | test | metric | shipped | mean ± sd (seeds) | tolerance | ok |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    csv = ["train,alpha,test,metric,n,shipped,mean,sd,tolerance,ok"]
    for c in cells:
        a = "" if c["alpha"] is None else f"{c['alpha']:g}"
        lines.append(f"| {c['train']} | {a or 'Table 9'} | {c['test']} | {c['metric']} | {c['shipped']:.2f} | "
                     f"{c['mean']:.2f} ± {c['sd']:.2f} | {c['tolerance']:.2f} | {'yes' if c['ok'] else 'NO'} |")
        csv.append(f"{c['train']},{a},{c['test']},{c['metric']},{c['n']},{c['shipped']:.4f},{c['mean']:.4f},"
                   f"{c['sd']:.4f},{c['tolerance']:.4f},{c['ok']}")
    references = sorted({c["reference"] for c in cells})
    (out / "retrain.md").write_text(f"Retrain check, profile {profile}, seeds {list(seeds)}; rule: {report['rule']}\n"
                                    f"Reference column ('shipped'): {'; '.join(references) or 'none'}\n\n"
                                    + "\n".join(lines) + "\n", encoding="utf-8")
    (out / "retrain.csv").write_text("\n".join(csv) + "\n", encoding="utf-8")
    verdict = (f"retrain: {len(cells) - len(failed)}/{len(cells)} SFT cells within tolerance over seeds "
               f"{list(seeds)} ({report['rule']}); report {out / 'retrain.md'}")
    print(("FAILED " if failed else "") + verdict, file=stream, flush=True)
    for c in failed:
        print(f"  {c['train']} a={c['alpha']} -> {c['test']} {c['metric']}: shipped {c['shipped']:.2f}, "
              f"mean {c['mean']:.2f} ± {c['sd']:.2f}", file=stream)
    return report
