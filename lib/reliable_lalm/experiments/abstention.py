"""Beyond the paper as experiment-level calls: confidence-based abstention, calibration,
unanswerable questions and option-order robustness on an :class:`~reliable_lalm.experiments.Experiment`.

Every expensive step is cached in result stores under the experiment's results folder and reused:

* option log-likelihoods of each item under the baseline and the IDK prompt
  (:func:`reliable_lalm.methods.option_scoring.score_options`), in ``option_scores/<method>``;
* the K@N samples the other notebooks draw (:meth:`Experiment.k_at_n_store`, same N / temperature /
  top-p as notebooks 04-07, so nothing is sampled again);
* the baseline, IDK and LoRA runs of notebooks 01, 02, 04 and 05 (:meth:`Experiment.run`,
  :meth:`CrossModal.evaluate`); adapters come from :meth:`CrossModal.adapter` (trained only when
  notebook 04/05 has not cached them);
* generations on the unanswerable variants (``unanswerable/...``) and on the option rotations
  (``circular/...``).

Confidence scores (one per item, higher = surer), all computed on the *base* model:

``option prob``
    softmax over the per-option log-likelihoods under the baseline prompt (sums of token
    log-probabilities, end-of-turn included); the probability of the option the baseline run
    answered, or the largest option probability when its output names no option.
``option prob (len-norm)``
    the same with each log-likelihood divided by its token count (mean per-token log-prob).
``1 - P(IDK)``
    under the IDK prompt, ``P(IDK) = exp(l_IDK) / (exp(l_IDK) + sum_j exp(l_j))``, the refusal's
    share among the candidate answers (:func:`reliable_lalm.core.abstention.idk_probability`).
``K@N agreement``
    share of the N sampled answers equal to their modal option (self-consistency).
``1 - entropy``
    one minus the normalised entropy of the sampled answers over options + "no option".

Abstention by threshold always rejects the *baseline run's* answers (greedy, baseline prompt) on
the least confident items. Risk–coverage and calibration rank the items the baseline answered
(its own refusals, if any, are left out; coverage is relative to those items). The comparison at
equal rejection rate keeps the baseline's refusals rejected and matches the method's total
rejection rate with one threshold (``tie_break="index"``: exactly that many items rejected).

Each table or figure of notebook 08 is built by exactly one method of :class:`AbstentionStudy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reliable_lalm import paths
from reliable_lalm.benchmarks.circular import build_circular, circular_summary
from reliable_lalm.benchmarks.unanswerable import (build_unanswerable, summary_rows, unanswerable_outcome_of,
                                                   unanswerable_summary)
from reliable_lalm.core import abstention as ab
from reliable_lalm.core.items import TASKS, load_benchmark
from reliable_lalm.core.normalize_types import Normalized
from reliable_lalm.core.records import records_from_store
from reliable_lalm.core.results import ResultStore
from reliable_lalm.core.scoring import score_records
from reliable_lalm.methods.option_scoring import SCORING_SETTINGS, option_score_records, score_options, store_extras

SCORES: tuple[str, ...] = ("option prob", "option prob (len-norm)", "1 - P(IDK)", "K@N agreement", "1 - entropy")
PROBABILITY_SCORES: tuple[str, ...] = SCORES  # all five lie in [0, 1]; calibration is computed for each
MMAU_TEST_MINI = "mmau-test-mini.2025-03-25.json"


def _normalize(normalizer, outputs: Sequence[str | None], choices: Sequence[Sequence[str]]) -> list[Normalized]:
    """Normalize outputs; a missing output (an error record) is invalid."""
    keep = [i for i, o in enumerate(outputs) if o is not None]
    done = normalizer.normalize_many([outputs[i] for i in keep], [list(choices[i]) for i in keep]) if keep else []
    out = [Normalized("invalid", None, "no output")] * len(outputs)
    for i, x in zip(keep, done):
        out[i] = x
    return out


def mmau_unanswerable_counts(metadata: str | Path, *, seed: int = 0):
    """Unanswerable variants of an MMAU-schema metadata file, counted per kind and task (no audio read).

    Returns ``(UnanswerableSet, counts DataFrame)``.
    """
    loaded = load_benchmark(metadata, check_audio=False)
    built = build_unanswerable(loaded.items, seed=seed)
    return built, pd.DataFrame(built.counts())


def default_mmau_metadata() -> Path | None:
    """``../shared/mmau/mmau-test-mini.2025-03-25.json`` beside the checkout, when it is there."""
    path = paths.SHARED_DIR / "mmau" / MMAU_TEST_MINI
    return path if path.is_file() else None


@dataclass
class AbstentionStudy:
    """Confidence-based abstention, calibration, unanswerable and circular evaluation of ``exp``.

    ``cm``: the cross-modal experiment (:meth:`Experiment.crossmodal`) whose LoRA adapters are
    compared too; ``None`` leaves them out. ``k_at_n_*`` must be the K@N settings of the other
    notebooks for their samples to be reused.
    """

    exp: Any
    cm: Any = None
    k_at_n_samples: int = 5
    k_at_n_temperature: float = 0.5
    k_at_n_top_p: float = 1.0
    n_bins: int = 10
    binning: str = "equal-width"
    coverages: tuple[float, ...] = ab.DEFAULT_COVERAGES
    targets: tuple[float, ...] = ab.CONFIDENCE_TARGETS
    unanswerable_kinds: tuple[str, ...] = ("no-answer", "foreign-options", "foreign-audio")
    circular_methods: tuple[str, ...] = ("baseline",)
    progress: bool = True
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------ cached inputs
    def option_store(self, method: str) -> Path:
        """Option log-likelihoods of every evaluated item under ``method``'s prompt (cached)."""
        directory, complete = self.exp.cached_store(f"option_scores/{method}", method, self.exp.items,
                                                    SCORING_SETTINGS, **store_extras())
        if not complete:
            score_options(self.exp.backend(), self.exp.items, directory, method=method, progress=self.progress)
        return directory

    def _scored(self, records: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return score_records(records, baseline, self.exp.normalizer_object, keep_items=True)

    def method_items(self, method: str) -> list[dict[str, Any]]:
        """Per-item outcome and normalized label of a prompting method of the base model (cached runs)."""
        key = f"items:{method}"
        if key not in self._cache:
            self._cache[key] = self._scored(self.exp.predictions(self.exp.run(method, progress=self.progress)))["items"]
        return self._cache[key]

    def adapter_items(self, train: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(adapter items, base items) of the adapter trained on ``train``, on the other modalities,
        with the base model's run that :class:`CrossModal` pairs it with."""
        key = f"adapter:{train}"
        if key not in self._cache:
            cm = self.cm
            tests = {t for t in TASKS if t != train}
            keep = lambda recs: [r for r in recs if r.get("task") in tests]  # noqa: E731
            pred = keep(records_from_store(cm.evaluate(cm.adapter(train)), cm.eval_items))
            base = keep(records_from_store(cm.baseline_store(), cm.eval_items))
            self._cache[key] = (self._scored(pred)["items"], self._scored(base)["items"])
        return self._cache[key]

    @cached_property
    def _k_at_n(self) -> dict[str, Any]:
        samples = self.exp.k_at_n_samples_by_item(n_samples=self.k_at_n_samples, temperature=self.k_at_n_temperature,
                                                  top_p=self.k_at_n_top_p, progress=self.progress)
        out = {}
        for item in self.exp.items:
            outs = [r.get("model_output") for r in samples[item.id]]
            out[item.id] = ab.sample_agreement(_normalize(self.exp.normalizer_object, outs, [item.choices] * len(outs)),
                                               item.choices)
        return out

    def _option_records(self, method: str) -> dict[str, dict[str, Any]]:
        key = f"options:{method}"
        if key not in self._cache:
            self._cache[key] = option_score_records(self.option_store(method))
        return self._cache[key]

    # ------------------------------------------------------------------------ confidences
    def confidences(self, base_items: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Each score of :data:`SCORES` for the items of a baseline run (aligned with ``base_items``).

        NaN where a score is undefined for an item (its option scoring failed, no K@N samples).
        """
        items = {it.id: it for it in self.exp.items}
        base_opts, idk_opts, k_at_n = self._option_records("baseline"), self._option_records("idk"), self._k_at_n
        out = {name: np.full(len(base_items), math.nan) for name in SCORES}
        for i, row in enumerate(base_items):
            item = items[row["id"]]
            rec = base_opts.get(item.id) or {}
            if rec.get("option_logprobs") is not None:
                for name, counts in (("option prob", None), ("option prob (len-norm)", rec["option_tokens"])):
                    p = ab.option_probabilities(rec["option_logprobs"], token_counts=counts)
                    chosen = row["label"] if row["kind"] == "choice" else None
                    out[name][i] = p[list(item.choices).index(chosen)] if chosen in item.choices else p.max()
            rec = idk_opts.get(item.id) or {}
            if rec.get("option_logprobs") is not None:
                out["1 - P(IDK)"][i] = 1.0 - ab.idk_probability(rec["idk_logprob"], rec["option_logprobs"])
            agreement = k_at_n.get(item.id)
            if agreement is not None and agreement.n_samples:
                out["K@N agreement"][i] = agreement.agreement
                out["1 - entropy"][i] = agreement.entropy_confidence
        return out

    def confidence_frame(self):
        """Per-item table: task, baseline outcome and label, IDK-prompt outcome, every confidence score."""
        base = self.method_items("baseline")
        idk = {r["id"]: r for r in self.method_items("idk")}
        conf = self.confidences(base)
        frame = pd.DataFrame({"id": [r["id"] for r in base], "task": [r["task"] for r in base],
                              "baseline_outcome": [r["outcome"] for r in base],
                              "baseline_label": [r["label"] for r in base],
                              "idk_outcome": [idk[r["id"]]["outcome"] for r in base], **conf})
        return frame.set_index("id")

    def _answered(self):
        frame = self.confidence_frame()
        return frame[frame["baseline_outcome"] != "rejected"]

    def curves(self) -> dict[str, Any]:
        """Per probability score, its risk–coverage curve on the items the baseline answered."""
        answered = self._answered()
        correct = (answered["baseline_outcome"] == "correct").to_numpy()
        curves = {}
        for name in SCORES:
            ok = answered[name].notna().to_numpy()
            curves[name] = ab.risk_coverage(answered[name].to_numpy()[ok], correct[ok])
        return curves

    # ------------------------------------------------------------------------ tables and figures
    def risk_coverage_table(self):
        """Per score: AURC, oracle AURC, E-AURC, and accuracy / selective Rel (%) at each coverage."""
        answered = self._answered()
        correct = (answered["baseline_outcome"] == "correct").to_numpy()
        rows = {}
        for name, rc in self.curves().items():
            ok = answered[name].notna().to_numpy()
            row = {"n": rc.n, "AURC": rc.aurc, "oracle AURC": rc.oracle_aurc, "E-AURC": rc.e_aurc}
            for c, v in ab.accuracy_at_coverage(answered[name].to_numpy()[ok], correct[ok], self.coverages).items():
                row[f"Acc% @{c:g}"] = None if v["accuracy"] is None else 100 * v["accuracy"]
                row[f"Rel% @{c:g}"] = None if v["rel"] is None else 100 * v["rel"]
            rows[name] = row
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "confidence"
        return out

    def risk_coverage_data(self):
        """The numbers :func:`reliable_lalm.reporting.abstention.risk_coverage_figure` draws: per score, one row per point of its curve."""
        frames = {name: rc.to_frame()[["threshold", "n_answered", "n_wrong", "coverage", "risk"]]
                  for name, rc in self.curves().items()}
        out = pd.concat(frames, names=["confidence", "point"])
        return out

    def calibration_table(self):
        """ECE (``n_bins`` bins, ``binning``; and the other binning beside it), MCE and Brier per score."""
        answered = self._answered()
        correct = (answered["baseline_outcome"] == "correct").to_numpy()
        other = [b for b in ab.BINNINGS if b != self.binning][0]
        rows = {}
        for name in PROBABILITY_SCORES:
            ok = answered[name].notna().to_numpy()
            conf = answered[name].to_numpy()[ok]
            cal = ab.calibration(conf, correct[ok], n_bins=self.n_bins, binning=self.binning)
            cal2 = ab.calibration(conf, correct[ok], n_bins=self.n_bins, binning=other)
            rows[name] = {"n": cal.n, f"ECE ({self.binning}, {self.n_bins} bins)": cal.ece,
                          f"ECE ({other}, {self.n_bins} bins)": cal2.ece,
                          f"MCE ({self.binning})": cal.mce, "Brier": cal.brier,
                          "mean confidence": float(conf.mean()) if len(conf) else None,
                          "accuracy": float(correct[ok].mean()) if ok.any() else None}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "confidence"
        return out

    def calibrations(self) -> dict[str, Any]:
        """Per probability score, its calibration (``binning``, ``n_bins`` bins) on the items the baseline answered."""
        answered = self._answered()
        correct = (answered["baseline_outcome"] == "correct").to_numpy()
        out = {}
        for name in PROBABILITY_SCORES:
            ok = answered[name].notna().to_numpy()
            out[name] = ab.calibration(answered[name].to_numpy()[ok], correct[ok], n_bins=self.n_bins,
                                       binning=self.binning)
        return out

    def reliability_data(self):
        """The numbers :func:`reliable_lalm.reporting.abstention.reliability_figure` draws: per score, one row per bin."""
        frames = {name: cal.to_frame().set_index("index") for name, cal in self.calibrations().items()}
        return pd.concat(frames, names=["confidence", "bin"])

    def confidence_target_table(self):
        """Mean confidence-target score (correct +1, wrong -t/(1-t), abstain 0) for t in ``targets``:
        the baseline and IDK prompting as they answer, and the baseline answering only where a score > t."""
        frame = self.confidence_frame()
        rows = {}
        for t in self.targets:
            row = {"penalty": ab.wrong_answer_penalty(t),
                   "baseline": ab.confidence_target_score(list(frame["baseline_outcome"]), t)["mean"],
                   "IDK prompting": ab.confidence_target_score(list(frame["idk_outcome"]), t)["mean"]}
            for name in PROBABILITY_SCORES:
                conf = frame[name].to_numpy()
                conf = np.where(np.isnan(conf) & (frame["baseline_outcome"] != "rejected").to_numpy(), 0.0, conf)
                row[f"baseline, {name} > t"] = ab.confidence_target_score_thresholded(
                    conf, list(frame["baseline_outcome"]), t)["mean"]
            rows[t] = row
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "t"
        return out

    def _comparisons(self) -> list[tuple[str, list[dict], list[dict]]]:
        """(label, method items, paired base items) of IDK prompting and every LoRA adapter."""
        base = self.method_items("baseline")
        idk = {r["id"]: r for r in self.method_items("idk")}
        out = [("IDK prompting", [idk[r["id"]] for r in base], base)]
        if self.cm is not None:
            for train in TASKS:
                pred, paired = self.adapter_items(train)
                by_id = {r["id"]: r for r in pred}
                paired = [r for r in paired if r["id"] in by_id]
                out.append((f"LoRA ({train})", [by_id[r["id"]] for r in paired], paired))
        return out

    def equal_rejection_table(self):
        """Acc/Tru/Rej/Rel (%), ΔCon/ΔHum (%, subset convention) and RGI of each method (IDK
        prompting, each LoRA adapter on the modalities it was not trained on) and of thresholding
        each score on the baseline's answers at that method's rejection rate, on the same items."""
        rows = {}
        for label, method, base in self._comparisons():
            conf = self.confidences(base)
            base_out = [r["outcome"] for r in base]
            tasks = [r["task"] for r in base]
            for name in ["(the method itself)", *SCORES]:
                c = conf.get(name, np.zeros(len(base)))
                c = np.where(np.isnan(c), -np.inf, c)  # an unscored item is rejected first
                res = ab.compare_at_equal_rejection(
                    c, base_out, [r["outcome"] for r in method], tasks, tie_break="index",
                    baseline_invalid=[r["kind"] == "invalid" and r["outcome"] == "wrong" for r in base],
                    method_invalid=[r["kind"] == "invalid" and r["outcome"] == "wrong" for r in method])
                s = res["method"] if name == "(the method itself)" else res["confidence_threshold"]
                total = s["total"]
                rows[(label, name)] = {
                    "n": total["n"], "Acc%": 100 * total["acc"], "Tru%": 100 * total["tru"],
                    "Rej%": 100 * total["rej"], "Rel%": 100 * total["rel"],
                    "ΔCon%": None if total.get("d_con_subset") is None else 100 * total["d_con_subset"],
                    "ΔHum%": None if total.get("d_hum_subset") is None else 100 * total["d_hum_subset"],
                    "RGI": total.get("rgi_subset"),
                    "threshold": None if name == "(the method itself)" else res["threshold"]["threshold"]}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index = pd.MultiIndex.from_tuples(out.index, names=["method", "decision"])
        return out

    # ------------------------------------------------------------------------ unanswerable
    @cached_property
    def unanswerable_set(self):
        """Unanswerable variants of the evaluated items (seeded with the experiment's seed)."""
        return build_unanswerable(self.exp.items, kinds=self.unanswerable_kinds, seed=self.exp.seed)

    def unanswerable_counts_table(self):
        """Variants built and skipped per kind and modality (built + skipped = source items)."""
        return pd.DataFrame(self.unanswerable_set.counts()).set_index(["kind", "task"])

    def _run_on(self, items: Sequence[Any], method: str, directory: Path, adapter: Path | None = None,
                settings=None) -> list[Normalized]:
        name = str(directory.relative_to(self.exp.results_dir))
        directory = self.exp.run_items(method, items, name=name, settings=settings, adapter=adapter,
                                       progress=self.progress)
        by_item = ResultStore(directory).by_item(0)
        outputs = [(by_item.get(it.id) or {}).get("model_output") for it in items]
        return _normalize(self.exp.normalizer_object, outputs, [it.choices for it in items])

    def _unanswerable_rows(self) -> list[tuple[str, dict[str, Any]]]:
        u_items = self.unanswerable_set.items
        root = self.exp.results_dir / "unanswerable" / f"seed{self.exp.seed}"
        out = []
        for method, label in (("baseline", "baseline"), ("idk", "IDK prompting")):
            norm = self._run_on(u_items, method, root / method)
            answerable = self.method_items(method)
            out.append((label, unanswerable_summary(
                [r["outcome"] for r in answerable], [r["task"] for r in answerable],
                [unanswerable_outcome_of(x) for x in norm], [it.task for it in u_items], [it.kind for it in u_items])))
        if self.cm is not None:
            for train in TASKS:
                adapter = self.cm.adapter(train)
                tests = [t for t in TASKS if t != train]
                items = [it for it in u_items if it.task in tests]
                norm = self._run_on(items, self.cm.config.eval_method, root / "adapters" / adapter.name,
                                    adapter=adapter, settings=self.cm.eval_settings())
                answerable, _ = self.adapter_items(train)
                out.append((f"LoRA ({train})", unanswerable_summary(
                    [r["outcome"] for r in answerable], [r["task"] for r in answerable],
                    [unanswerable_outcome_of(x) for x in norm], [it.task for it in items], [it.kind for it in items])))
        return out

    def unanswerable_table(self):
        """Refusal rate (%) on answerable and on unanswerable items, hallucination rate and the gap,
        per method (baseline, IDK prompting, each LoRA adapter on its test modalities), total and per kind."""
        rows = {}
        for label, summary in self._unanswerable_rows():
            for row in summary_rows(summary):
                if row["group"] != "total" and not row["group"].startswith("kind:"):
                    continue
                pct = lambda v: None if v is None else 100 * v  # noqa: E731
                rows[(label, row["group"].replace("kind:", ""))] = {
                    "n answerable": row["n_answerable"], "n unanswerable": row["n_unanswerable"],
                    "refusal% answerable": pct(row["refusal_rate_answerable"]),
                    "refusal% unanswerable": pct(row["refusal_rate_unanswerable"]),
                    "hallucination%": pct(row["hallucination_rate"]),
                    "invalid% unanswerable": pct(row["invalid_rate_unanswerable"]),
                    "gap (pp)": pct(row["refusal_gap"])}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index = pd.MultiIndex.from_tuples(out.index, names=["method", "items"])
        return out

    # ------------------------------------------------------------------------ circular
    def circular_table(self):
        """Per method and modality: consistency under all rotations of the options, circular
        accuracy (correct in every rotation), mean accuracy over rotations and rotation-0 accuracy (%)."""
        rotated = build_circular(self.exp.items)
        rows = {}
        for method in self.circular_methods:
            norm = self._run_on(rotated, method, self.exp.results_dir / "circular" / method)
            summary = circular_summary(rotated, norm)
            for group, values in [*summary["by_task"].items(), ("total", summary["total"])]:
                if not values["n_items"]:
                    continue
                pct = lambda v: None if v is None else 100 * v  # noqa: E731
                rows[(method, group)] = {
                    "n items": values["n_items"], "n presentations": values["n_presentations"],
                    "consistency%": pct(values["consistency_rate"]),
                    "consistency% (IDK counts)": pct(values["consistency_rate_with_refusal"]),
                    "circular Acc%": pct(values["circular_accuracy"]), "mean Acc%": pct(values["mean_accuracy"]),
                    "rot0 Acc%": pct(values["rot0_accuracy"])}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index = pd.MultiIndex.from_tuples(out.index, names=["method", "modality"])
        return out
