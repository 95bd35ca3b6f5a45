"""The paper's experiments as library calls, with every expensive step cached on disk.

Notebooks stay thin: they build an :class:`Experiment` from their parameters and call it. Each
generation run goes into a resumable :class:`~reliable_lalm.core.results.ResultStore` under
``paths.results_dir(profile)/<model tag>/...``; scoring reads the stores. Running a notebook twice
reuses every result; a crash loses at most the batch in flight.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from reliable_lalm import paths
from reliable_lalm.core.items import TASKS, BenchmarkItem, LoadedBenchmark, load_benchmark

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
SYNTHETIC_BENCHMARK = "synthetic"


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def model_fingerprint(model_path: Path) -> str:
    """Content hash of a local checkpoint's config and weights (a retrained demo gets new caches)."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in model_path.iterdir()):
        if name.endswith((".json", ".safetensors", ".jinja")) and name != "card_metrics.json":
            digest.update(name.encode())
            digest.update((model_path / name).read_bytes())
    return digest.hexdigest()[:10]


@dataclass
class Experiment:
    """One model on one benchmark under one parameter profile.

    ``model``: ``"demo"`` (the shipped checkpoint), a local checkpoint folder, or a hub id that is
    already in the Hugging Face cache (e.g. ``Qwen/Qwen2-Audio-7B-Instruct``).
    ``benchmark``: ``"synthetic"`` (the demo benchmark's test split) or an MMAU-schema JSON file;
    ``audio_dir`` is the folder its ``audio_id`` paths are relative to (default: the JSON's folder).
    """

    profile: str = "demo"
    model: str = DEMO_MODEL
    benchmark: str = SYNTHETIC_BENCHMARK
    audio_dir: str | None = None
    limit_per_task: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    normalizer: str = "rule"
    bootstrap: int = 1000
    seed: int = 0
    max_new_tokens: int | None = None  # None: the engine's per-method default
    few_shot_file: str | None = None  # MCoT few-shot examples (JSON list); demo: from its training record
    results_root: Path | None = None
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def settings_dict(self) -> dict[str, Any]:
        """The constructor arguments (for an experiment on another model with the same settings)."""
        return {name: getattr(self, name) for name in (
            "profile", "model", "benchmark", "audio_dir", "limit_per_task", "batch_size", "device", "normalizer",
            "bootstrap", "seed", "max_new_tokens", "few_shot_file", "results_root")}

    # ---------------------------------------------------------------- data and model
    @property
    def model_path(self) -> Path | None:
        if self.model == DEMO_MODEL:
            return paths.DEMO_MODEL_DIR
        path = Path(self.model)
        return path if path.exists() else None

    @cached_property
    def model_tag(self) -> str:
        path = self.model_path
        if path is not None:
            name = "demo" if self.model == DEMO_MODEL else path.name
            return f"{name}-{model_fingerprint(path)}"
        return self.model.replace("/", "--")

    @cached_property
    def loaded_benchmark(self) -> LoadedBenchmark:
        if self.benchmark == SYNTHETIC_BENCHMARK:
            from reliable_lalm.demo import synthetic

            return load_benchmark(synthetic.default_benchmark("test"))
        return load_benchmark(self.benchmark, self.audio_dir, check_audio=False)

    @cached_property
    def items(self) -> list[BenchmarkItem]:
        """The evaluated items: all, or the first ``limit_per_task`` of each modality."""
        items = self.loaded_benchmark.items
        if self.limit_per_task is None:
            return list(items)
        kept: list[BenchmarkItem] = []
        for task in TASKS:
            kept += [it for it in items if it.task == task][: self.limit_per_task]
        return kept

    def items_of(self, tasks: Sequence[str] | str | None = None) -> list[BenchmarkItem]:
        if tasks is None:
            return self.items
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        return [it for it in self.items if it.task in tasks]

    @cached_property
    def benchmark_tag(self) -> str:
        """Benchmark name and content hash: a regenerated or revised benchmark never reuses results."""
        source = Path(self.loaded_benchmark.source)
        digest = hashlib.sha256(source.read_bytes())
        meta = source.with_suffix(".meta.json")  # the synthetic benchmark's audio fingerprints
        if meta.exists():
            digest.update(meta.read_bytes())
        name = "synthetic" if self.benchmark == SYNTHETIC_BENCHMARK else source.stem
        return f"{name}-{digest.hexdigest()[:10]}"

    @property
    def results_dir(self) -> Path:
        root = Path(self.results_root) if self.results_root else paths.results_dir(self.profile)
        return root / self.model_tag / self.benchmark_tag

    def backend(self, adapter: str | Path | None = None):
        """The inference backend (loaded once per adapter; nothing is loaded while results are cached)."""
        from reliable_lalm.models.qwen2_audio import HFBackend

        key = str(adapter or "")
        if key not in self._backends:
            name = str(self.model_path) if self.model_path is not None else self.model
            self._backends[key] = HFBackend.from_pretrained(name, batch_size=self.batch_size, device=self.device,
                                                            adapter=adapter)
        return self._backends[key]

    def few_shot(self) -> list:
        """MCoT few-shot examples: from ``few_shot_file``, or those the demo model was trained with."""
        from reliable_lalm.core.prompts import FewShotExample

        source = Path(self.few_shot_file) if self.few_shot_file else None
        if source is None and self.model == DEMO_MODEL:
            source = paths.DEMO_MODEL_DIR / "training.json"
        if source is None or not source.exists():
            return []
        data = json.loads(source.read_text())
        examples = data["few_shot"] if isinstance(data, dict) else data
        return [FewShotExample(**ex) for ex in examples]

    def settings(self, method: str):
        from reliable_lalm.models.base import GenerationSettings
        from reliable_lalm.methods.runners import DEFAULT_MAX_NEW_TOKENS

        return GenerationSettings(max_new_tokens=self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[method],
                                  seed=self.seed)

    # ---------------------------------------------------------------- generation (cached)
    def store_dir(self, method: str, adapter_tag: str | None = None) -> Path:
        return self.results_dir / (f"{method}" if adapter_tag is None else f"adapters/{adapter_tag}/{method}")

    def run(self, method: str, *, tasks: Sequence[str] | str | None = None, adapter: str | Path | None = None,
            adapter_tag: str | None = None, progress: bool = True) -> Path:
        """Generate (or reuse) the outputs of a prompting method; returns the store folder."""
        from reliable_lalm.methods.runners import run_method
        from reliable_lalm.core.results import ResultStore

        store_dir = self.store_dir(method, adapter_tag)
        items = self.items_of(tasks)
        if store_dir.exists() and self._complete(ResultStore(store_dir), items):
            return store_dir
        few_shot = self.few_shot() if method == "mcot" else ()
        summary = run_method(self.backend(adapter), items, method, store_dir, settings=self.settings(method),
                             few_shot=few_shot, progress=progress)
        if summary.errors:
            log.warning("%s: %d items failed (see error records), e.g. %s", method, summary.errors,
                        next(iter(summary.error_items.items())))
        return store_dir

    def knn_store(self, *, n_samples: int = 5, temperature: float = 1.0, top_p: float = 1.0,
                  progress: bool = True) -> Path:
        """K@N sampling over every evaluated item (N answers each, one prefill per item), cached.

        One pass serves every K (Figure 5) and every training modality (04_sft, 05, 07).
        """
        from dataclasses import replace

        from reliable_lalm.models.base import GenerationSettings
        from reliable_lalm.methods.runners import sample_knn
        from reliable_lalm.core.results import ResultStore

        store_dir = self.results_dir / "knn" / f"n{n_samples}-t{temperature:g}-p{top_p:g}"
        if store_dir.exists() and self._complete(ResultStore(store_dir), self.items, n_samples):
            return store_dir
        settings = replace(self.settings("baseline"), do_sample=True, temperature=temperature, top_p=top_p)
        summary = sample_knn(self.backend(), self.items, store_dir, n_samples=n_samples, settings=settings,
                             progress=progress)
        if summary.errors:
            log.warning("K@N: %d items failed (see error records)", summary.errors)
        return store_dir

    def idk_fractions(self, *, n_samples: int = 5, temperature: float = 1.0, top_p: float = 1.0):
        """Figure 5 data: IDK share (%) of the K@N training set for K = 1..N, per modality and all."""
        from reliable_lalm.training.idk_dataset import idk_fraction_frame
        from reliable_lalm.core.results import ResultStore

        store = ResultStore(self.knn_store(n_samples=n_samples, temperature=temperature, top_p=top_p))
        frame = idk_fraction_frame(store, self.items, n=n_samples)
        frame.index.name = "k"
        return frame

    def crossmodal(self, *, knn_samples: int = 5, knn_k: int = 5, knn_temperature: float = 1.0,
                   knn_top_p: float = 1.0, sft: dict[str, Any] | None = None):
        """The cross-modal protocol (train on one modality's K@N IDK set, test on the others) on
        this experiment's model and items; adapters and evaluations are cached under the results."""
        from reliable_lalm.experiments.crossmodal import CrossModal, CrossModalConfig

        store = self.knn_store(n_samples=knn_samples, temperature=knn_temperature, top_p=knn_top_p)
        config = CrossModalConfig(
            base_model=str(self.model_path) if self.model_path is not None else self.model,
            knn_store=str(store), cache_dir=str(self.results_dir / "crossmodal"), k=knn_k, n=knn_samples,
            sft={k: v for k, v in (sft or {}).items() if v is not None},
            device=None if self.device == "auto" else self.device, eval_batch_size=self.batch_size,
            normalizer=self.normalizer, n_boot=self.bootstrap, seed=self.seed)
        return CrossModal(config, eval_items=self.items)

    @staticmethod
    def _complete(store, items: Sequence[BenchmarkItem], n_samples: int = 1) -> bool:
        done = store.done_keys()
        return all((it.id, j) in done for it in items for j in range(n_samples))

    # ---------------------------------------------------------------- scoring
    def predictions(self, store_dir: Path, tasks: Sequence[str] | str | None = None,
                    sample_index: int = 0) -> list[dict[str, Any]]:
        """MMAU-style records (original fields + ``model_output``) for the evaluated items."""
        from reliable_lalm.core.results import ResultStore

        by_item = ResultStore(store_dir).by_item(sample_index)
        out = []
        for item in self.items_of(tasks):
            rec = by_item.get(item.id)
            if rec is None:
                raise KeyError(f"item {item.id!r} has no record in {store_dir}; run the method first")
            extra = {"error": rec["error"]} if rec.get("error") else {}
            out.append({**item.to_record(), "id": item.id, "choices": list(item.choices), **extra,
                        "model_output": rec.get("model_output")})
        return out

    def examples(self, methods: Sequence[str], per_task: int = 1):
        """Raw outputs of ``methods`` on the first ``per_task`` items of each modality (for reading)."""
        import pandas as pd

        from reliable_lalm.core.results import ResultStore

        chosen = [it for task in TASKS for it in self.items_of(task)[:per_task]]
        rows = []
        for method in methods:
            records = ResultStore(self.run(method)).by_item(0)
            for item in chosen:
                rec = records.get(item.id, {})
                row = {"method": method, "item": item.id, "question": item.question, "answer": item.answer,
                       "output": rec.get("model_output"), "error": rec.get("error")}
                for step in ("agent_type", "agent_content"):
                    if step in rec:
                        row[step] = rec[step]
                rows.append(row)
        return pd.DataFrame.from_records(rows)

    @cached_property
    def normalizer_object(self):
        from reliable_lalm.core.llm_normalizer import build_normalizer

        return build_normalizer(self.normalizer)

    def score(self, method: str, *, baseline: str | None = "baseline", tasks: Sequence[str] | str | None = None,
              adapter: str | Path | None = None, adapter_tag: str | None = None) -> dict[str, Any]:
        """Score a method (and its gains over the baseline run of the base model) on the items."""
        from reliable_lalm.core.scoring import score_records

        pred = self.predictions(self.run(method, tasks=tasks, adapter=adapter, adapter_tag=adapter_tag), tasks)
        base = None
        if baseline is not None:
            base = self.predictions(self.run(baseline, tasks=tasks), tasks)
        return score_records(pred, base, self.normalizer_object, n_boot=self.bootstrap, seed=self.seed)

    def score_unnormalized(self, method: str = "baseline") -> dict[str, Any]:
        """MMAU's official string match on the raw outputs (Table 1's "MMAU (Unnormalized)" row)."""
        from reliable_lalm.core.scoring import score_mmau_string_match

        return score_mmau_string_match(self.predictions(self.run(method)))

    def reference_rows(self) -> dict[str, dict[str, Any]]:
        """Random guess (expected value) and most-frequent-choice rows on the evaluated items."""
        from reliable_lalm.core.scoring import score_reference_baselines

        return score_reference_baselines(self.items)



# -------------------------------------------------------------------- helpers used by the notebooks
def model_label(model: str) -> str:
    """A short display name: "demo" or the last path/hub component."""
    return "demo" if model == DEMO_MODEL else Path(model.rstrip("/")).name


def paper_comparable(benchmark: str) -> bool:
    """Our numbers sit beside the paper's only on MMAU (not on the synthetic demo benchmark)."""
    return benchmark != SYNTHETIC_BENCHMARK


def table3_scores(exp: Experiment, models: Sequence[str], *, idk: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """Table 3 rows: each model's baseline (and with ``idk`` its IDK-prompting) scores.

    Every model is evaluated on the same items with the same settings as ``exp``.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name in [exp.model, *[m for m in models if m != exp.model]]:
        other = exp if name == exp.model else Experiment(**{**exp.settings_dict(), "model": name})
        rows[(model_label(name), "no")] = other.score("baseline", baseline=None)
        if idk:
            rows[(model_label(name), "yes")] = other.score("idk", baseline=None)
    return rows


def ci_table(rows: dict[Any, dict[str, Any]], metrics: Sequence[str] = ("acc", "tru", "rej", "rel")):
    """Bootstrap 95% intervals of the score dicts, long format (row, modality, metric, value, low, high)."""
    import pandas as pd

    records = []
    for label, score in rows.items():
        for group_name, group in [("total", score), *score.get("by_task", {}).items()]:
            ci = group.get("ci", {})
            for metric in metrics:
                interval = ci.get(metric) or {}
                records.append({"row": label, "modality": group_name, "metric": metric, "value": group.get(metric),
                                "low": interval.get("low"), "high": interval.get("high")})
    return pd.DataFrame.from_records(records)


def lora_scores(cm, train_tasks: Sequence[str] = TASKS) -> dict[str, dict[str, Any]]:
    """Score dict of each training modality's adapter on the *other* modalities (paired with the base)."""
    out = {}
    for train in train_tasks:
        store = cm.evaluate(cm.adapter(train))
        out[train] = cm.score(store, [t for t in TASKS if t != train])
    return out


def cross_validated(scores_by_train: dict[str, dict[str, Any]],
                    keys: Sequence[str] = ("acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi",
                                           "d_con_subset", "d_hum_subset", "rgi_subset")) -> dict[str, Any]:
    """The paper's "LoRA Fine-tuning" row: for each test modality, the mean over the adapters trained
    on the other modalities; the total is the mean of the three modalities (as the paper's tables).

    ``scores_by_train`` maps the training modality to the score dict of its adapter (with by_task
    for the modalities it was tested on). Undefined values (None) are left out of a mean.
    """
    by_task: dict[str, dict[str, Any]] = {}
    for test in TASKS:
        groups = [s["by_task"][test] for train, s in scores_by_train.items() if train != test and test in s.get("by_task", {})]
        if not groups:
            continue
        by_task[test] = {}
        for key in keys:
            values = [g[key] for g in groups if g.get(key) is not None]
            by_task[test][key] = sum(values) / len(values) if values else None
    total: dict[str, Any] = {}
    for key in keys:
        values = [g[key] for g in by_task.values() if g.get(key) is not None]
        total[key] = sum(values) / len(values) if len(values) == len(TASKS) else None
    return {**total, "by_task": by_task, "cross_validated_from": sorted(scores_by_train)}


def frame(rows: Sequence[dict[str, Any]]):
    """Rows (dicts) as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def adapter_summary(adapter_dir: str | Path) -> dict[str, Any]:
    """What an adapter was trained on and how (its ``training_summary.json``, without bulky logs)."""
    from reliable_lalm.training.lora_sft import read_summary

    summary = dict(read_summary(adapter_dir) or {})
    summary.pop("log", None)
    summary.pop("losses", None)
    return summary


def alpha_figure_frame(sweep):
    """Figure 4 data from :meth:`CrossModal.alpha_sweep`: alpha, modality, rej and rel in percent,
    RGI, and their bootstrap bounds (the layout :func:`reporting.plot_alpha_ablation` draws)."""
    out = sweep.rename(columns={"test": "modality"})[["alpha", "modality"]].copy()
    for name, scale in (("rej", 100.0), ("rel", 100.0), ("rgi", 1.0)):
        for suffix in ("", "_low", "_high"):
            column = name + suffix
            out[column] = sweep[column].astype(float) * scale
    return out.set_index(["alpha", "modality"])
