"""The paper's experiments as library calls, with every expensive step cached on disk.

Notebooks stay thin: they build an :class:`Experiment` from their parameters and call it. Each
generation run goes into a resumable :class:`~reliable_lalm.core.results.ResultStore` under
``paths.results_dir(profile)/<model tag>/...``; scoring reads the stores. Running a notebook twice
reuses every result; a crash loses at most the batch in flight.
"""
from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from reliable_lalm import paths
from reliable_lalm.benchmarks.registry import parse_benchmark
from reliable_lalm.core import jsonio
from reliable_lalm.core.fingerprint import digest, items_fingerprint, model_fingerprint
from reliable_lalm.core.items import BenchmarkItem, LoadedBenchmark
from reliable_lalm.core.prompts import FewShotExample
from reliable_lalm.core.results import ResultStore, params_fingerprint
from reliable_lalm.core.scoring import (NOT_RUN_KEY, score_mmau_string_match, score_records,
                                        score_reference_baselines)
from reliable_lalm.experiments.crossmodal import CrossModal, CrossModalConfig
from reliable_lalm.methods.execution import method_inputs, pending_items, run_method, sample_k_at_n
from reliable_lalm.methods.generation import store_params_for
from reliable_lalm.methods.llm_judge import FALLBACK_WARNING, build_normalizer, describe_normalizer, fell_back_to_rules
from reliable_lalm.methods.registry import get_method
from reliable_lalm.models.base import GenerationSettings
from reliable_lalm.models.hf_loading import published_generation_settings, resolve_device, resolve_dtype
from reliable_lalm.models.registry import UnknownModelError, resolve_model
from reliable_lalm.models.worker import WorkerNotConfigured
from reliable_lalm.training.idk_dataset import idk_fraction_frame
from reliable_lalm.training.lora_sft import read_summary

log = logging.getLogger(__name__)
MAX_WARNINGS_SHOWN = 20  # item warnings printed per run before "N more"



@dataclass
class Experiment:
    """One model on one benchmark under one parameter profile.

    ``model``: ``"demo"`` (the shipped checkpoint), a local checkpoint folder, or a hub id that is
    already in the Hugging Face cache (e.g. ``Qwen/Qwen2-Audio-7B-Instruct``).
    ``benchmark``: ``"synthetic"`` (the demo benchmark's test split) or an MMAU-schema JSON file;
    ``audio_dir`` is the folder its ``audio_id`` paths are relative to (default: the JSON's folder).
    """

    profile: str = "demo"
    model: str = paths.DEMO_MODEL_NAME
    benchmark: str = paths.SYNTHETIC_BENCHMARK_NAME
    audio_dir: str | None = None
    limit_per_task: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    normalizer: str = "rule"
    bootstrap: int = 1000
    seed: int = 0
    max_new_tokens: int | None = None  # None: the engine's per-method default
    few_shot_file: str | None = None  # MCoT few-shot examples (JSON list); demo: from its training record
    # "greedy" (the default: the paper does not state its decoding) or "generation_config" (the
    # checkpoint's published sampling settings, repetition penalty included).
    decoding: str = "greedy"
    k_at_n_normalizer: str | None = None  # what judges K@N samples; None: the evaluation's ``normalizer``
    results_root: Path | None = None
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def settings_dict(self) -> dict[str, Any]:
        """The constructor arguments (for an experiment on another model with the same settings)."""
        return {name: getattr(self, name) for name in (
            "profile", "model", "benchmark", "audio_dir", "limit_per_task", "batch_size", "device", "normalizer",
            "bootstrap", "seed", "max_new_tokens", "few_shot_file", "decoding", "k_at_n_normalizer", "results_root")}

    # ---------------------------------------------------------------- data and model
    @cached_property
    def model_entry(self):
        """The model's registry entry (a registered name, a local folder, or a cached hub id)."""
        return resolve_model(self.model)

    @cached_property
    def model_source(self) -> str:
        return self.model_entry.resolve_source()

    @property
    def model_path(self) -> Path | None:
        path = Path(self.model_source).expanduser()
        return path if path.exists() else None

    @cached_property
    def model_tag(self) -> str:
        """Registry name (readable) and content hash of the weights: other weights, other caches."""
        name = Path(self.model_entry.name.rstrip("/")).name.replace("/", "--")
        return f"{name}-{str(model_fingerprint(self.model_source)).replace('name:', '')[:10]}"

    @cached_property
    def benchmark_entry(self):
        return parse_benchmark(self.benchmark)[0]

    @cached_property
    def loaded_benchmark(self) -> LoadedBenchmark:
        entry, path = parse_benchmark(self.benchmark)
        return entry.load(path, self.audio_dir, check_audio=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The benchmark's modality groups, in table order."""
        return self.loaded_benchmark.modalities

    @cached_property
    def items(self) -> list[BenchmarkItem]:
        """The evaluated items: all, or the first ``limit_per_task`` of each modality."""
        items = self.loaded_benchmark.items
        if self.limit_per_task is None:
            return list(items)
        kept: list[BenchmarkItem] = []
        for task in self.modalities:
            kept += [it for it in items if it.task == task][: self.limit_per_task]
        return kept

    def require_modalities(self, *names: str) -> None:
        """Raise ``ValueError`` (one line) for a modality the benchmark does not have."""
        unknown = [n for n in names if n not in self.modalities]
        if unknown:
            raise ValueError(f"modality {unknown[0]!r} is not one of this benchmark's: {', '.join(self.modalities)}")

    def items_of(self, tasks: Sequence[str] | str | None = None) -> list[BenchmarkItem]:
        if tasks is None:
            return self.items
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        return [it for it in self.items if it.task in tasks]

    @cached_property
    def benchmark_tag(self) -> str:
        """Benchmark name and the content hash of its evaluated items, audio bytes included."""
        name = self.benchmark_entry.name if self.benchmark_entry.default_path else Path(self.loaded_benchmark.source).stem
        return f"{name}-{items_fingerprint(self.items)[:10]}"

    @property
    def results_dir(self) -> Path:
        root = Path(self.results_root) if self.results_root else paths.results_dir(self.profile)
        return root / self.model_tag / self.benchmark_tag

    def backend(self, adapter: str | Path | None = None):
        """The inference backend (loaded once per adapter; nothing is loaded while results are cached)."""
        key = str(adapter or "")
        if key not in self._backends:
            cls = self.model_entry.backend_class()
            if cls.serves_remotely:  # a worker or an endpoint: its own process and settings
                if adapter is not None:
                    raise ValueError(f"{self.model_entry.name}: {cls.__name__} serves its own model; a LoRA adapter "
                                     "cannot be attached to it")
                self._backends[key] = self.model_entry.load()
            else:
                self._backends[key] = cls.from_pretrained(self.model_source, batch_size=self.batch_size,
                                                          device=self.device, adapter=adapter)
        return self._backends[key]

    def model_description(self, adapter: str | Path | None = None) -> dict[str, Any]:
        """``backend.describe()`` without loading the model (keys of the cached stores)."""
        key = str(adapter or "")
        if key in self._backends or self.model_entry.backend_class().serves_remotely:
            return self.backend(adapter).describe()  # a worker or an endpoint describes itself once started
        dtype = str(resolve_dtype("auto", resolve_device(self.device))).replace("torch.", "")
        return self.model_entry.backend_class().describe_checkpoint(self.model_source,
                                                                    str(adapter) if adapter else None, dtype)

    def few_shot(self) -> list:
        """MCoT few-shot examples: from ``few_shot_file``, else the ``few_shot`` list of the
        checkpoint's ``training.json`` (checkpoints trained by this toolkit's recipe carry theirs).

        MCoT without examples is not the paper's MCoT (Table 6): no examples is an error.
        """
        source = Path(self.few_shot_file) if self.few_shot_file else None
        if source is not None and not source.is_absolute() and not source.exists():
            source = paths.REPO_ROOT / source  # profiles name files relative to the repository
        if source is None and self.model_path is not None:
            source = self.model_path / "training.json"
        if source is None or not source.is_file():
            raise FileNotFoundError(
                f"MCoT needs few-shot examples: no few_shot_file given and no training.json with 'few_shot' in "
                f"{self.model_source!r} (a JSON list of {{question, choices, reasoning, answer}})")
        data = jsonio.load_file(source)
        examples = data.get("few_shot") if isinstance(data, dict) else data
        if not examples:
            raise ValueError(f"{source}: no few-shot examples in it")
        return [FewShotExample(**ex) for ex in examples]

    @cached_property
    def decoding_settings(self) -> dict[str, Any]:
        """GenerationSettings keywords of the ``decoding`` choice ({} for greedy)."""
        if self.decoding == "greedy":
            return {}
        if self.decoding == "generation_config":
            return published_generation_settings(self.model_source)
        raise ValueError(f"decoding must be 'greedy' or 'generation_config', not {self.decoding!r}")

    def settings(self, method: str):
        return GenerationSettings(max_new_tokens=self.max_new_tokens or get_method(method).default_max_new_tokens,
                                  seed=self.seed, **self.decoding_settings)

    # ---------------------------------------------------------------- generation (cached)
    def cached_store(self, name: str, method: str, items, settings, few_shot=(), n_samples: int = 1,
                      adapter: str | Path | None = None, **extra) -> tuple[Path, bool]:
        """``(store folder, complete?)`` of a cached run, keyed by content.

        The folder is named after a hash of what determines the run (model and adapter content,
        method, settings, few-shot examples, every item's content and rendered prompt), and
        "complete" means every item has a record computed from its current content and prompt: the
        same check every run makes first.
        """
        params = store_params_for(self.model_description(adapter), method, settings, few_shot, **extra)
        inputs = digest(sorted(v["key"] for v in method_inputs(items, method, few_shot).values()))
        store_dir = self.results_dir / f"{name}-{digest([params_fingerprint(params), inputs])[:10]}"
        if not (store_dir / "manifest.json").is_file():
            return store_dir, False
        store = ResultStore(store_dir)
        if store.manifest().get("params_fingerprint") != params_fingerprint(params):
            return store_dir, False  # run_method will refuse to mix; never reuse
        return store_dir, not pending_items(store, items, method, few_shot, n_samples)

    def run(self, method: str, *, tasks: Sequence[str] | str | None = None, adapter: str | Path | None = None,
            progress: bool = True) -> Path:
        """Generate (or reuse) the outputs of a prompting method; returns the store folder."""
        return self.run_items(method, self.items_of(tasks), adapter=adapter, progress=progress)

    def run_items(self, method: str, items: Sequence[BenchmarkItem], *, name: str | None = None,
                  settings=None, adapter: str | Path | None = None, progress: bool = True) -> Path:
        """:meth:`run` on any items (e.g. unanswerable or rotated variants), cached by content under
        ``name`` (default: the method)."""

        few_shot = tuple(self.few_shot()) if get_method(method).uses_few_shot else ()
        settings = settings or self.settings(method)
        name = name or (method if adapter is None else f"adapters/{method}")
        store_dir, complete = self.cached_store(name, method, items, settings, few_shot, adapter=adapter)
        if complete:
            return store_dir
        summary = run_method(self.backend(adapter), items, method, store_dir, settings=settings,
                             few_shot=few_shot, progress=progress)
        if summary.errors:
            log.warning("%s: %d items failed (see error records), e.g. %s", method, summary.errors,
                        next(iter(summary.error_items.items())))
        warned = ResultStore(store_dir).item_warnings() if summary.warnings else []
        for item_id, warning in warned[:MAX_WARNINGS_SHOWN]:  # each item's warning, not only a count
            log.warning("%s %s: %s", method, item_id, warning)
        if len(warned) > MAX_WARNINGS_SHOWN:
            log.warning("%s: %d more item warnings (rlalm report %s lists every item)", method,
                        len(warned) - MAX_WARNINGS_SHOWN, store_dir)
        return store_dir

    def k_at_n_store(self, *, n_samples: int = 5, temperature: float = 1.0, top_p: float = 1.0,
                  progress: bool = True) -> Path:
        """K@N sampling over every evaluated item (N answers each, one prefill per item), cached.

        One pass serves every K (Figure 5) and every training modality (04_sft, 05, 07).
        """
        # K@N has its own sampling settings (k_at_n_* parameters), whatever the evaluation's decoding.
        settings = replace(self.settings("baseline"), do_sample=True, temperature=temperature, top_p=top_p,
                           top_k=0, repetition_penalty=1.0, num_samples=n_samples)
        store_dir, complete = self.cached_store("knn/baseline", "baseline", self.items, settings,
                                                 n_samples=n_samples, kind="knn")
        if complete:
            return store_dir
        summary = sample_k_at_n(self.backend(), self.items, store_dir, n_samples=n_samples, settings=settings,
                             progress=progress)
        if summary.errors:
            log.warning("K@N: %d items failed (see error records)", summary.errors)
        return store_dir

    def k_at_n_samples_by_item(self, *, n_samples: int = 5, temperature: float = 1.0, top_p: float = 1.0,
                               progress: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Each evaluated item's K@N sample records (sampled now if not cached), by sample index, the
        first ``n_samples`` only."""
        by_item = ResultStore(self.k_at_n_store(n_samples=n_samples, temperature=temperature, top_p=top_p,
                                                progress=progress)).by_item(None)
        return {item.id: [r for r in sorted(by_item.get(item.id, []), key=lambda r: int(r.get("sample_index", 0)))
                          if int(r.get("sample_index", 0)) < n_samples]
                for item in self.items}

    def idk_fractions(self, *, n_samples: int = 5, temperature: float = 1.0, top_p: float = 1.0):
        """Figure 5 data: IDK share (%) of the K@N training set for K = 1..N, per modality and all."""
        store = ResultStore(self.k_at_n_store(n_samples=n_samples, temperature=temperature, top_p=top_p))
        frame = idk_fraction_frame(store, self.items, n=n_samples, normalizer=self.k_at_n_normalizer_object)
        frame.index.name = "k"
        return frame

    def crossmodal(self, *, k_at_n_samples: int = 5, k_at_n_k: int = 5, k_at_n_temperature: float = 1.0,
                   k_at_n_top_p: float = 1.0, sft: dict[str, Any] | None = None):
        """The cross-modal protocol (train on one modality's K@N IDK set, test on the others) on
        this experiment's model and items; adapters and evaluations are cached under the results."""
        store = self.k_at_n_store(n_samples=k_at_n_samples, temperature=k_at_n_temperature, top_p=k_at_n_top_p)
        config = CrossModalConfig(
            base_model=self.model_source,
            k_at_n_store=str(store), cache_dir=str(self.results_dir / "crossmodal"), k=k_at_n_k, n=k_at_n_samples,
            sft={k: v for k, v in (sft or {}).items() if v is not None},
            device=None if self.device == "auto" else self.device, eval_batch_size=self.batch_size,
            normalizer=self.normalizer, k_at_n_normalizer=self.k_at_n_normalizer, eval_decoding=self.decoding_settings,
            n_boot=self.bootstrap, seed=self.seed)
        return CrossModal(config, eval_items=self.items, sample_log_dir=paths.runs_dir(self.profile) / "samples")

    # ---------------------------------------------------------------- scoring
    def predictions(self, store_dir: Path, tasks: Sequence[str] | str | None = None,
                    sample_index: int = 0) -> list[dict[str, Any]]:
        """MMAU-style records (original fields + ``model_output``) for the evaluated items."""
        by_item = ResultStore(store_dir).by_item(sample_index)
        out = []
        for item in self.items_of(tasks):
            rec = by_item.get(item.id)
            if rec is None:
                raise KeyError(f"item {item.id!r} has no record in {store_dir}; run the method first")
            extra = {"error": rec["error"]} if rec.get("error") else {}
            out.append({**item.scoring_record(), "id": item.id, "choices": list(item.choices), **extra,
                        "model_output": rec.get("model_output")})
        return out

    def examples(self, methods: Sequence[str], per_task: int = 1):
        """Raw outputs of ``methods`` on the first ``per_task`` items of each modality (for reading)."""
        chosen = [it for task in self.modalities for it in self.items_of(task)[:per_task]]
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
        """The evaluation's normalizer; an LLM normalization that fell back to the rules (no key) is
        said loudly: a warning in the output (``rlalm reproduce`` records it in its report)."""
        normalizer = build_normalizer(self.normalizer)
        if fell_back_to_rules(self.normalizer, normalizer):
            message = FALLBACK_WARNING.format(kind=self.normalizer)
            print(message, file=sys.stderr, flush=True)
            warnings.warn(message, stacklevel=2)
        return normalizer

    @cached_property
    def k_at_n_normalizer_object(self):
        """What judges K@N samples (the evaluation's normalizer unless ``k_at_n_normalizer`` is set)."""
        if self.k_at_n_normalizer in (None, self.normalizer):
            return self.normalizer_object
        return build_normalizer(self.k_at_n_normalizer)

    @property
    def normalizer_caption(self) -> str:
        """One sentence for table captions: what normalized the answers."""
        return describe_normalizer(self.normalizer, self.normalizer_object)

    def score(self, method: str, *, baseline: str | None = "baseline", tasks: Sequence[str] | str | None = None,
              adapter: str | Path | None = None) -> dict[str, Any]:
        """Score a method (and its gains over the baseline run of the base model) on the items.

        Every output's judge decision and why is logged beside the notebook outputs
        (:meth:`sample_log_path`, :mod:`reliable_lalm.core.sample_log`)."""
        pred = self.predictions(self.run(method, tasks=tasks, adapter=adapter), tasks)
        base = None
        if baseline is not None:
            base = self.predictions(self.run(baseline, tasks=tasks), tasks)
        return score_records(pred, base, self.normalizer_object, n_boot=self.bootstrap, seed=self.seed,
                             modalities=self.modalities,
                             log_samples=self.sample_log_path(method, baseline=baseline, tasks=tasks, adapter=adapter))

    def sample_log_path(self, method: str, *, baseline: str | None = "baseline",
                        tasks: Sequence[str] | str | None = None, adapter: str | Path | None = None) -> Path:
        """``runs/<profile>/samples/<model>-<method>[-<adapter>][-<tasks>][-vs-<baseline>].jsonl``."""
        parts = [self.model_tag, method]
        if adapter is not None:
            parts.append(Path(str(adapter).rstrip("/")).name)
        if tasks is not None:
            parts.append("+".join([tasks] if isinstance(tasks, str) else tasks))
        if baseline is not None:
            parts.append(f"vs-{baseline}")
        return paths.runs_dir(self.profile) / "samples" / ("-".join(parts) + ".jsonl")

    def score_unnormalized(self, method: str = "baseline") -> dict[str, Any]:
        """MMAU's official string match on the raw outputs (Table 1's "MMAU (Unnormalized)" row)."""
        return score_mmau_string_match(self.predictions(self.run(method)))

    def reference_rows(self) -> dict[str, dict[str, Any]]:
        """Random guess (expected value) and most-frequent-choice rows on the evaluated items."""
        return score_reference_baselines(self.items)



# -------------------------------------------------------------------- helpers used by the notebooks
def model_label(model: str) -> str:
    """The row label of a model: the paper's Table 3 label its registry entry declares (or that of the
    model it stands in for), else its name."""
    try:
        entry = resolve_model(model)
    except UnknownModelError:
        return Path(str(model).rstrip("/")).name
    return entry.table_label() or Path(entry.name.rstrip("/")).name


def paper_comparable(benchmark: str) -> bool:
    """Our numbers sit beside the paper's only on a benchmark whose registry entry says the paper's
    reference tables apply (MMAU test-mini), never on the demo's or a user's own benchmark."""
    return parse_benchmark(benchmark)[0].paper_reference


def table3_scores(exp: Experiment, models: Sequence[str], *, idk: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """The scores of Table 3's rows (laid out by :func:`reliable_lalm.reporting.table3`): each
    model's baseline (and with ``idk`` its IDK-prompting) scores, keyed ``(model label, "no"/"yes")``.

    Every model is evaluated on the same items with the same settings as ``exp``. A worker model
    whose environment is not configured (Qwen-Audio-Chat, SALMONN) keeps its rows, as
    ``{"not_run": reason}`` (Table 3 prints "not run" and the reason), and a warning says so.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name in [exp.model, *[m for m in models if m != exp.model]]:
        other = exp if name == exp.model else Experiment(**{**exp.settings_dict(), "model": name})
        label = model_label(name)
        try:
            scores = {"no": other.score("baseline", baseline=None)}
            if idk:
                scores["yes"] = other.score("idk", baseline=None)
        except WorkerNotConfigured as err:
            log.warning("Table 3: %s not run: %s", label, err)
            scores = {k: {NOT_RUN_KEY: str(err)} for k in (("no", "yes") if idk else ("no",))}
        for prompted, score in scores.items():
            rows[(label, prompted)] = score
    return rows


def ci_table(rows: dict[Any, dict[str, Any]], metrics: Sequence[str] = ("acc", "tru", "rej", "rel")):
    """Bootstrap 95% intervals of the score dicts, long format (row, modality, metric, value, low, high)."""
    records = []
    for label, score in rows.items():
        for group_name, group in [("total", score), *score.get("by_task", {}).items()]:
            ci = group.get("ci", {})
            for metric in metrics:
                interval = ci.get(metric) or {}
                records.append({"row": label, "modality": group_name, "metric": metric, "value": group.get(metric),
                                "low": interval.get("low"), "high": interval.get("high")})
    return pd.DataFrame.from_records(records)


def lora_scores(cm, train_tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Score dict of each training modality's adapter (default: every modality of ``cm``'s items)
    on the *other* modalities, paired with the base model."""
    out = {}
    for train in (cm.modalities if train_tasks is None else train_tasks):
        store = cm.evaluate(cm.adapter(train))
        out[train] = cm.score(store, [t for t in cm.modalities if t != train])
    return out


def cross_validated(scores_by_train: dict[str, dict[str, Any]],
                    keys: Sequence[str] = ("acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi",
                                           "d_con_subset", "d_hum_subset", "rgi_subset"),
                    *, modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """The paper's "LoRA Fine-tuning" row: for each test modality, the mean over the adapters trained
    on the other modalities; the total is the mean over the modalities (as the paper's tables), and
    undefined unless every modality has a value.

    ``scores_by_train`` maps the training modality to the score dict of its adapter (with by_task
    for the modalities it was tested on). ``modalities``: the modalities of the row (default: the
    training modalities, then any other one tested; in a cross-validation each is also tested by
    the other adapters). Undefined values (None) are left out of a mean.
    """
    if modalities is None:
        tested = [t for s in scores_by_train.values() for t in s.get("by_task", {})]
        modalities = list(dict.fromkeys([*scores_by_train, *tested]))
    by_task: dict[str, dict[str, Any]] = {}
    for test in modalities:
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
        total[key] = sum(values) / len(values) if values and len(values) == len(modalities) else None
    return {**total, "by_task": by_task, "cross_validated_from": sorted(scores_by_train)}


def frame(rows: Sequence[dict[str, Any]]):
    """Rows (dicts) as a DataFrame."""
    return pd.DataFrame(list(rows))


def adapter_summary(adapter_dir: str | Path) -> dict[str, Any]:
    """What an adapter was trained on and how (its ``training_summary.json``, without bulky logs)."""
    summary = dict(read_summary(adapter_dir) or {})
    summary.pop("log", None)
    summary.pop("losses", None)
    return summary
