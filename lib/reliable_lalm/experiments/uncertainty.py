"""Beyond the paper, round two, as experiment-level calls: uncertainty estimators side by side,
audio-reliance controls, and abstention with a finite-sample guarantee (notebook 09).

Everything expensive is a cached, resumable result store under the experiment's results folder
(named after a hash of the model description, the method, the settings and every record's
inputs, as :meth:`Experiment.cached_store` names its own):

* ``answer_scores/greedy``: the log-probability of the baseline run's greedy answer under the
  baseline prompt (:func:`reliable_lalm.methods.uncertainty.score_texts`);
* ``answer_scores/knn``: the log-probabilities of the K@N samples (the samples of notebooks 04-08,
  reused, not drawn again);
* ``answer_scores/p-true``: ``"True"``/``"False"`` after the verification prompt about the greedy answer;
* ``follow_up/verbalized-confidence``: the reply to the 0-100 confidence prompt (greedy);
* ``audio_controls/<control>/<method>``: baseline and IDK runs on the items with silent and noise
  audio (clips under ``<results>/audio_controls/clips``, never beside the benchmark's audio).

Confidence scores (one per baseline item, in [0, 1], higher = surer; NaN = undefined, counted):

``sequence prob`` / ``sequence prob (len-norm)``
    ``P(greedy answer)`` and its geometric mean per token.
``exp(-PE)`` / ``exp(-PE, len-norm)``
    the predictive entropy over the K@N samples (:func:`reliable_lalm.core.uncertainty.predictive_entropy`).
``exp(-discrete SE)``
    discrete semantic entropy over the judged K@N samples (clusters: the option or the refusal).
``P(True)``, ``verbalized``
    the follow-up prompts; an unparseable verbalised reply is missing.

The scores of notebook 08 (:class:`reliable_lalm.experiments.abstention.AbstentionStudy`) are
ranked beside them.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reliable_lalm.benchmarks.audio_controls import build_audio_controls
from reliable_lalm.core import abstention as ab
from reliable_lalm.core import risk_control as rc
from reliable_lalm.core import uncertainty as un
from reliable_lalm.core.fingerprint import digest
from reliable_lalm.core.items import TASKS
from reliable_lalm.core.normalize_types import IDK_LABEL
from reliable_lalm.core.prompts import P_TRUE_ANSWERS
from reliable_lalm.core.results import ResultStore, params_fingerprint
from reliable_lalm.core.records import records_from_store
from reliable_lalm.experiments.abstention import SCORES as OPTION_SCORES
from reliable_lalm.experiments.abstention import AbstentionStudy, _normalize
from reliable_lalm.methods.registry import get_method
from reliable_lalm.methods.generation import input_fingerprint, store_params_for, valid_done_keys
from reliable_lalm.methods.uncertainty import (_or_error, follow_up_prompt_of, run_follow_up, score_texts,
                                               text_score_inputs, text_score_params)

NEW_SCORES: tuple[str, ...] = ("sequence prob", "sequence prob (len-norm)", "exp(-PE)", "exp(-PE, len-norm)",
                               "exp(-discrete SE)", "P(True)", "verbalized")
ALL_SCORES: tuple[str, ...] = (*NEW_SCORES, *OPTION_SCORES)
CONTROL_METHODS: tuple[str, ...] = ("baseline", "idk")
MAX_MISSING = 0.05  # an estimator missing on more of a modality's items is shown but not ranked


def _split_half(item_id: str, seed: int) -> bool:
    """Deterministic 50/50 split of items by id (True: calibration)."""
    return hashlib.sha256(f"{seed}:calibration:{item_id}".encode()).digest()[0] < 128


@dataclass
class UncertaintyStudy:
    """Uncertainty estimators, audio-reliance controls and risk-controlled abstention of ``exp``.

    ``k_at_n_*``: the K@N settings of the other notebooks (their samples are reused).
    ``alpha``/``delta``: the risk level and error rate of the guarantee; ``procedure``: Learn-then-Test's
    family-wise procedure (:data:`reliable_lalm.core.risk_control.PROCEDURES`); ``calibrate_on``:
    the modality whose threshold is carried to the others.
    """

    exp: Any
    k_at_n_samples: int = 5
    k_at_n_temperature: float = 0.5
    k_at_n_top_p: float = 1.0
    verbalized_max_new_tokens: int = 8
    alpha: float = 0.1
    delta: float = 0.1
    procedure: str = "bonferroni"
    calibrate_on: str = "sound"
    permutations: int = 1000
    controls: tuple[str, ...] = ("silence", "white-noise")
    progress: bool = True
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def option_study(self) -> AbstentionStudy:
        return AbstentionStudy(self.exp, cm=None, k_at_n_samples=self.k_at_n_samples, k_at_n_temperature=self.k_at_n_temperature,
                               k_at_n_top_p=self.k_at_n_top_p, progress=self.progress)

    # ------------------------------------------------------------------------ cached stores
    def _store_dir(self, name: str, params: dict[str, Any], inputs: dict[str, dict[str, str]]) -> tuple[Path, bool]:
        """``(folder, complete?)`` of a store keyed by ``params`` and every record's inputs."""

        fp = params_fingerprint(params)
        directory = self.exp.results_dir / f"{name}-{digest([fp, sorted(v['key'] for v in inputs.values())])[:10]}"
        if not (directory / "manifest.json").is_file():
            return directory, False
        store = ResultStore(directory)
        if store.manifest().get("params_fingerprint") != fp:
            return directory, False
        done = valid_done_keys(store, inputs)
        return directory, all((i, 0) in done for i in inputs)

    @cached_property
    def _baseline_outputs(self) -> dict[str, str | None]:

        by_item = ResultStore(self.exp.run("baseline", progress=self.progress)).by_item(0)
        return {it.id: (by_item.get(it.id) or {}).get("model_output") for it in self.exp.items}

    @cached_property
    def _k_at_n_outputs(self) -> dict[str, list[str | None]]:
        samples = self.exp.k_at_n_samples_by_item(n_samples=self.k_at_n_samples, temperature=self.k_at_n_temperature,
                                                  top_p=self.k_at_n_top_p, progress=self.progress)
        return {item_id: [r.get("model_output") for r in recs] for item_id, recs in samples.items()}

    def _scores(self, name: str, method: str, prompt_of, texts_of) -> dict[str, dict[str, Any]]:

        if name not in self._cache:
            items = self.exp.items
            inputs = text_score_inputs(items, _or_error(prompt_of), _or_error(texts_of, []))
            directory, complete = self._store_dir(name, text_score_params(self.exp.model_description(), method), inputs)
            if not complete:
                score_texts(self.exp.backend(), items, directory, method=method, prompt_of=prompt_of,
                            texts_of=texts_of, progress=self.progress)
            self._cache[name] = ResultStore(directory).by_item(0)
        return self._cache[name]

    def greedy_scores(self) -> dict[str, dict[str, Any]]:
        """Per item: the log-probability and token count of the baseline's greedy answer."""

        entry, outputs = get_method("baseline"), self._baseline_outputs

        def texts_of(item):
            if outputs.get(item.id) is None:
                raise ValueError("the baseline run has no output for this item")
            return [outputs[item.id]]
        return self._scores("answer_scores/greedy", "baseline",
                            lambda it: entry.build_prompt(it.question, it.choices), texts_of)

    def sample_scores(self) -> dict[str, dict[str, Any]]:
        """Per item: the log-probabilities of its K@N samples (error samples left out)."""

        entry, samples = get_method("baseline"), self._k_at_n_outputs
        return self._scores("answer_scores/knn", "baseline", lambda it: entry.build_prompt(it.question, it.choices),
                            lambda it: [s for s in samples.get(it.id, []) if s is not None])

    def p_true_scores(self) -> dict[str, dict[str, Any]]:
        """Per item: log P("True") and log P("False") after the verification prompt."""

        return self._scores("answer_scores/p-true", "p-true", follow_up_prompt_of("p-true", self._baseline_outputs),
                            lambda it: list(P_TRUE_ANSWERS))

    def verbalized_replies(self) -> dict[str, dict[str, Any]]:
        """Per item: the reply to the verbalised-confidence prompt (greedy, cached)."""

        key = "verbalized"
        if key not in self._cache:
            method = "verbalized-confidence"
            settings = replace(self.exp.settings("baseline"), max_new_tokens=self.verbalized_max_new_tokens)
            prompt_of = follow_up_prompt_of(method, self._baseline_outputs)
            inputs = {it.id: input_fingerprint(it, _or_error(prompt_of)) for it in self.exp.items}
            directory, complete = self._store_dir(f"follow_up/{method}",
                                                  store_params_for(self.exp.model_description(), method, settings),
                                                  inputs)
            if not complete:
                run_follow_up(self.exp.backend(), self.exp.items, self._baseline_outputs, directory, method=method,
                              settings=settings, progress=self.progress)
            self._cache[key] = ResultStore(directory).by_item(0)
        return self._cache[key]

    # ------------------------------------------------------------------------ confidences
    def confidence_frame(self):
        """Per baseline item: task, baseline and IDK-prompt outcomes, every score of :data:`ALL_SCORES`."""

        if "frame" in self._cache:
            return self._cache["frame"]
        base = self.option_study.method_items("baseline")
        idk = {r["id"]: r for r in self.option_study.method_items("idk")}
        option_conf = self.option_study.confidences(base)
        greedy, samples, ptrue, verbal = (self.greedy_scores(), self.sample_scores(), self.p_true_scores(),
                                          self.verbalized_replies())
        k_at_n_labels = self._k_at_n_labels()
        new = {name: np.full(len(base), math.nan) for name in NEW_SCORES}
        verbal_missing = []
        for i, row in enumerate(base):
            item_id = row["id"]
            g = greedy.get(item_id) or {}
            if g.get("logprobs"):
                new["sequence prob"][i] = un.sequence_probability(g["logprobs"][0])
                new["sequence prob (len-norm)"][i] = un.length_normalized_probability(g["logprobs"][0],
                                                                                       g["token_counts"][0])
            s = samples.get(item_id) or {}
            if s.get("logprobs"):
                new["exp(-PE)"][i] = un.entropy_confidence(un.predictive_entropy(s["logprobs"]))
                new["exp(-PE, len-norm)"][i] = un.entropy_confidence(un.predictive_entropy(s["logprobs"],
                                                                                           s["token_counts"]))
            se = un.discrete_semantic_entropy(k_at_n_labels.get(item_id, []))
            if se.confidence is not None:
                new["exp(-discrete SE)"][i] = se.confidence
            p = ptrue.get(item_id) or {}
            if p.get("logprobs"):
                new["P(True)"][i] = un.p_true(*p["logprobs"][:2])
            reply = (verbal.get(item_id) or {}).get("model_output")
            value = un.parse_verbalized_confidence(reply)
            if value is not None:
                new["verbalized"][i] = value
            verbal_missing.append(value is None)
        frame = pd.DataFrame({"id": [r["id"] for r in base], "task": [r["task"] for r in base],
                              "baseline_outcome": [r["outcome"] for r in base],
                              "baseline_invalid": [r["kind"] == "invalid" and r["outcome"] == "wrong" for r in base],
                              "idk_outcome": [idk[r["id"]]["outcome"] for r in base],
                              "idk_invalid": [idk[r["id"]]["kind"] == "invalid" and idk[r["id"]]["outcome"] == "wrong"
                                              for r in base],
                              **new, **option_conf}).set_index("id")
        frame.attrs["verbalized_missing"] = int(sum(verbal_missing))
        self._cache["frame"] = frame
        return frame

    def _k_at_n_labels(self) -> dict[str, list[str | None]]:
        """Each K@N sample's cluster: the option the judge decided, the refusal, or None (invalid)."""
        out = {}
        for item in self.exp.items:
            outputs = self._k_at_n_outputs.get(item.id, [])
            norm = _normalize(self.exp.k_at_n_normalizer_object, outputs, [item.choices] * len(outputs))
            out[item.id] = [x.choice if x.kind == "choice" else IDK_LABEL if x.kind == "idk" else None for x in norm]
        return out

    # ------------------------------------------------------------------------ estimator ranking
    def _groups(self, frame):
        tasks = [t for t in TASKS if t in set(frame["task"])]
        return [*[(t, frame[frame["task"] == t]) for t in tasks], ("total", frame)]

    def estimator_table(self):
        """Per modality and estimator: items scored and missing, AURC, chance AURC (the error rate:
        a score without information), the permutation p-value of "no better than chance", E-AURC,
        ECE (10 equal-width bins), Rel (%) when the baseline is thresholded at the IDK prompt's
        rejection rate, and the ranks on AURC and on that Rel (only estimators missing on at most
        :data:`MAX_MISSING` of the items are ranked)."""

        frame = self.confidence_frame()
        rows = {}
        for group, g in self._groups(frame):
            answered = g[g["baseline_outcome"] != "rejected"]
            correct = (answered["baseline_outcome"] == "correct").to_numpy()
            block = {}
            for name in ALL_SCORES:
                ok = answered[name].notna().to_numpy()
                conf, right = answered[name].to_numpy()[ok], correct[ok]
                curve = ab.risk_coverage(conf, right)
                cal = ab.calibration(conf, right, n_bins=10) if len(conf) else None
                c = np.where(np.isnan(g[name].to_numpy()), -np.inf, g[name].to_numpy())  # unscored: rejected first
                res = ab.compare_at_equal_rejection(c, list(g["baseline_outcome"]), list(g["idk_outcome"]),
                                                    list(g["task"]), tie_break="index",
                                                    baseline_invalid=list(g["baseline_invalid"]),
                                                    method_invalid=list(g["idk_invalid"]))
                pvalue = None if curve.aurc is None else un.aurc_chance_pvalue(
                    conf, right, curve.aurc, n_permutations=self.permutations, seed=self.exp.seed)
                block[name] = {"n": int(ok.sum()), "missing": int((~ok).sum()), "AURC": curve.aurc,
                               "chance AURC": float(1 - right.mean()) if len(right) else None,
                               "p (no better than chance)": pvalue, "E-AURC": curve.e_aurc,
                               "ECE": None if cal is None else cal.ece,
                               "Rel% at IDK Rej": 100 * res["confidence_threshold"]["total"]["rel"],
                               "IDK prompting Rel%": 100 * res["method"]["total"]["rel"],
                               "IDK Rej%": 100 * res["method"]["total"]["rej"]}
            ranked = pd.DataFrame.from_dict(block, orient="index")
            # Ranked only where at most MAX_MISSING of the items lack the score: an AURC over the few
            # items an estimator could score is not comparable with one over all of them.
            comparable = ranked["missing"] <= MAX_MISSING * (ranked["n"] + ranked["missing"])
            aurc = pd.to_numeric(ranked["AURC"]).where(comparable)
            ranked["rank AURC"] = aurc.rank(method="min").astype("Int64")
            ranked["rank Rel"] = ranked["Rel% at IDK Rej"].where(comparable).rank(
                method="min", ascending=False).astype("Int64")
            for name, row in ranked.iterrows():
                rows[(group, name)] = row.to_dict()
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index = pd.MultiIndex.from_tuples(out.index, names=["modality", "estimator"])
        for col in ("n", "missing", "rank AURC", "rank Rel"):
            out[col] = out[col].astype("Int64")
        return out

    def missing_table(self):
        """Verbalised replies that were not a number from 0 to 100, per modality (counted, with an example)."""

        replies = self.verbalized_replies()
        frame = self.confidence_frame()
        rows = {}
        for group, g in self._groups(frame):
            ids = list(g.index)
            bad = [i for i in ids if un.parse_verbalized_confidence((replies.get(i) or {}).get("model_output")) is None]
            example = next(((replies.get(i) or {}).get("model_output") for i in bad), None)
            rows[group] = {"n": len(ids), "unparseable": len(bad),
                           "unparseable%": 100 * len(bad) / len(ids) if ids else None,
                           "example reply": None if example is None else repr(example)[:60]}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "modality"
        return out

    # ------------------------------------------------------------------------ audio reliance
    @cached_property
    def control_set(self):
        """The audio-control variants of the evaluated items (clips in the results folder's cache)."""

        return build_audio_controls(self.exp.items, self.exp.results_dir / "audio_controls" / "clips",
                                    controls=self.controls, seed=self.exp.seed)

    def _control_items(self, control: str, method: str) -> list[dict[str, Any]]:
        key = f"control:{control}:{method}"
        if key not in self._cache:

            items = self.control_set.items[control]
            directory = self.exp.run_items(method, items, name=f"audio_controls/{control}/{method}",
                                           progress=self.progress)
            records = records_from_store(directory, items)
            self._cache[key] = self.option_study._scored(records)["items"]
        return self._cache[key]

    def audio_reliance_table(self):
        """Per modality: accuracy with the audio and with each control (the shortcut rate), chance
        accuracy (mean 1/number of options), items right both with the audio and under a control,
        and the IDK prompt's refusal rate with the audio and under each control (%)."""

        base = {r["id"]: r for r in self.option_study.method_items("baseline")}
        idk = {r["id"]: r for r in self.option_study.method_items("idk")}
        items = {it.id: it for it in self.exp.items}
        per = {(c, m): {r["id"].rsplit("::", 1)[0]: r for r in self._control_items(c, m)}
               for c in self.controls for m in CONTROL_METHODS}
        rows = {}
        for group in [*[t for t in TASKS if any(it.task == t for it in items.values())], "total"]:
            ids = [i for i, it in items.items() if group == "total" or it.task == group]
            ids = [i for i in ids if i not in self.control_set.skipped]
            pct = lambda xs: 100 * float(np.mean(xs)) if len(xs) else None  # noqa: E731
            row = {"n": len(ids), "Acc% audio": pct([base[i]["outcome"] == "correct" for i in ids])}
            for c in self.controls:
                row[f"Acc% {c}"] = pct([per[(c, "baseline")][i]["outcome"] == "correct" for i in ids])
            row["chance Acc%"] = pct([1 / len(items[i].choices) for i in ids])
            for c in self.controls:
                row[f"right with audio and {c} (n)"] = int(sum(base[i]["outcome"] == "correct"
                                                                and per[(c, "baseline")][i]["outcome"] == "correct"
                                                                for i in ids))
            row["IDK Rej% audio"] = pct([idk[i]["outcome"] == "rejected" for i in ids])
            for c in self.controls:
                row[f"IDK Rej% {c}"] = pct([per[(c, "idk")][i]["outcome"] == "rejected" for i in ids])
            for c in self.controls:
                row[f"baseline Rej% {c}"] = pct([per[(c, "baseline")][i]["outcome"] == "rejected" for i in ids])
            rows[group] = row
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "modality"
        return out

    def audio_reliance_items(self):
        """The items the baseline answers correctly both with the audio and under a control."""

        base = {r["id"]: r for r in self.option_study.method_items("baseline")}
        per = {c: {r["id"].rsplit("::", 1)[0]: r for r in self._control_items(c, "baseline")} for c in self.controls}
        rows = []
        for item in self.exp.items:
            if item.id in self.control_set.skipped or base[item.id]["outcome"] != "correct":
                continue
            right = {c: per[c][item.id]["outcome"] == "correct" for c in self.controls}
            if any(right.values()):
                rows.append({"id": item.id, "task": item.task, "answer": item.answer,
                             **{f"right with {c}": v for c, v in right.items()}})
        columns = ["id", "task", "answer", *[f"right with {c}" for c in self.controls]]
        return pd.DataFrame(rows, columns=columns).set_index("id")

    # ------------------------------------------------------------------------ risk control
    def _answered(self):
        frame = self.confidence_frame()
        return frame[frame["baseline_outcome"] != "rejected"]

    def _calibrate(self, name: str, cal, tests: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        conf = np.nan_to_num(cal[name].to_numpy(), nan=-1.0)  # an unscored item is never answered
        res = rc.ltt_threshold(conf, (cal["baseline_outcome"] == "correct").to_numpy(), alpha=self.alpha,
                               delta=self.delta, procedure=self.procedure)
        rows = []
        for label, test in tests:
            t = rc.selective_risk(np.nan_to_num(test[name].to_numpy(), nan=-1.0),
                                  (test["baseline_outcome"] == "correct").to_numpy(), res.threshold)
            rows.append({"test": label, "n calibration": res.n_calibration, "threshold": res.threshold,
                         "calibration coverage%": None if res.calibration_coverage is None else 100 * res.calibration_coverage,
                         "calibration risk%": None if res.calibration_risk is None else 100 * res.calibration_risk,
                         "n test": t["n"], "test coverage%": None if t["coverage"] is None else 100 * t["coverage"],
                         "test risk%": None if t["risk"] is None else 100 * t["risk"],
                         "test risk <= alpha": None if t["risk"] is None else bool(t["risk"] <= self.alpha)})
        return rows

    def risk_control_table(self):
        """Learn-then-Test thresholds (alpha, delta) per estimator, calibrated on (a) a seeded random
        half of all answered items and tested on the other half (the guarantee's own setting),
        (b) every answered item of ``calibrate_on`` and tested on each other modality (transfer)."""
        answered = self._answered()
        half = np.array([_split_half(i, self.exp.seed) for i in answered.index])
        home = (answered["task"] == self.calibrate_on).to_numpy()
        others = [t for t in TASKS if t != self.calibrate_on and (answered["task"] == t).any()]
        rows = {}
        for name in ALL_SCORES:
            for r in self._calibrate(name, answered[half], [("all (other half)", answered[~half])]):
                rows[(name, "all (random half)", r.pop("test"))] = r
            if home.any() and others:
                tests = [(t, answered[(answered["task"] == t).to_numpy()]) for t in others]
                for r in self._calibrate(name, answered[home], tests):
                    rows[(name, self.calibrate_on, r.pop("test"))] = r
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index = pd.MultiIndex.from_tuples(out.index, names=["estimator", "calibration", "test"])
        out.attrs["caption"] = (f"alpha = {self.alpha}, delta = {self.delta}, Learn-then-Test, binomial tail "
                                f"p-values, {self.procedure} over the thresholds {rc.DEFAULT_GRID[0]:.2f}, "
                                f"{rc.DEFAULT_GRID[1]:.2f}, ..., {rc.DEFAULT_GRID[-1]:.2f}")
        return out
