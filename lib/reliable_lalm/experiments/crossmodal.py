"""Cross-modal transfer of IDK awareness (paper section 5.3, Figure 3, Appendix F Tables 10-12)
and the LoRA-alpha study (section 5.4, Figure 4).

Protocol (as the paper describes it):

* the base model's K@N IDK dataset is built per modality from one sampling pass
  (:mod:`reliable_lalm.training.idk_dataset`; main results use 5@5: Table 12's IDK shares 63.06 / 61.98 /
  65.47 % average to Figure 5's 5@5 = 63.5 %);
* a LoRA adapter is trained on one modality's IDK set (Table 9 hyper-parameters per modality,
  :meth:`reliable_lalm.training.lora_config.LoraSFTConfig.for_modality`);
* the fine-tuned model is evaluated with the *baseline* prompt (Appendix C: "Baseline and LoRA
  Fine-tuning" share Table 4) on the other modalities, and compared item by item with the base
  model's baseline-prompt run on the same items: ΔCon, ΔHum, RGI (eqs. 8-10), with paired
  bootstrap intervals (:func:`reliable_lalm.core.metrics.bootstrap_gain`).

The paper builds the IDK set and evaluates on the same benchmark (MMAU test-mini, cross-validated
across modalities), so a train = test cell is in-domain (the model was fine-tuned on those very
items); it is reported with ``in_domain=True`` (Table 12 shows those rejection rates too). With
separate ``train_items`` (e.g. the synthetic benchmark's train split) no cell is in-domain.

Everything is cached under ``cache_dir`` keyed by its parameters: adapters in
``adapters/<train>-a<alpha>-<key>`` (peft format + ``training_summary.json``) and evaluation
stores in ``eval/<model>-<key>`` (result stores, resumable). A rerun with the same parameters
reuses them; any change (model files, sample store, K, N, hyper-parameters, prompts, items,
decoding) gives a new key. Outcomes are reported as they come: a negative RGI or an undefined
one (ΔCon = 0) is a result.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from reliable_lalm.core.fingerprint import directory_fingerprint, items_fingerprint, model_fingerprint
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore, params_fingerprint
from reliable_lalm.core.records import records_from_store
from reliable_lalm.core.scoring import score_records
from reliable_lalm.experiments.shipped import find_shipped, model_content_digest, read_manifest
from reliable_lalm.experiments.shipped import training_key as shipped_training_key
from reliable_lalm.methods.execution import pending_items, run_method
from reliable_lalm.methods.llm_judge import resolve_normalizer
from reliable_lalm.models.base import GenerationSettings
from reliable_lalm.models.registry import load_backend
from reliable_lalm.training.idk_dataset import build_idk_dataset
from reliable_lalm.training.adapter_check import AdapterCheckError, verify_adapter
from reliable_lalm.training.distributed import load_deepspeed_config
from reliable_lalm.training.lora_config import LoraSFTConfig
from reliable_lalm.training.lora_sft import read_summary, train_lora_sft

PAPER_K = 5  # 5@5 (see the module docstring)
PAPER_ALPHA_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)  # our grid; the paper's Figure 4 axis values are not in the text


@dataclass
class CrossModalConfig:
    """Everything the cross-modal experiments depend on (all of it enters the cache keys)."""
    base_model: str
    k_at_n_store: str  # K@N samples of the base model over the training items (``rlalm train k-at-n``)
    cache_dir: str
    k: int = PAPER_K
    n: int | None = None  # default: the store's N
    train_prompt: str = "baseline"  # prompt of the SFT examples (paper: baseline)
    eval_method: str = "baseline"  # prompt of the evaluation (paper: baseline, Table 4)
    eval_max_new_tokens: int = 64
    sft: dict[str, Any] = field(default_factory=dict)  # LoraSFTConfig overrides on top of Table 9
    deepspeed_config: str | None = None  # in-process DeepSpeed (one process); None: plain loop
    device: str | None = None
    dtype: str = "auto"
    eval_batch_size: int | None = None
    normalizer: str = "rule"  # rule | openai | auto | all (reliable_lalm.methods.llm_judge)
    # What judges the K@N samples' correctness for the IDK set; None: the evaluation's normalizer.
    k_at_n_normalizer: str | None = None
    # Decoding of the evaluation beyond greedy (GenerationSettings keywords, e.g. the checkpoint's
    # published do_sample/top_k/top_p/temperature/repetition_penalty); {}: greedy.
    eval_decoding: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 1000
    seed: int = 0  # bootstrap seed
    convention: str = "subset"  # ΔCon/ΔHum convention of the headline RGI (subset = the paper's printed values)
    progress: bool = True
    allow_foreign_k_at_n: bool = False  # accept a K@N store sampled from another model (or older weights)
    # Evaluate a shipped adapter (reliable_lalm.experiments.shipped) whose training key matches
    # instead of training: SFT is not bitwise portable across CPUs, evaluation is (issue 16).
    use_shipped: bool = True


def model_identity(name_or_path: str) -> dict[str, Any]:
    """The base model by content (weights hash), never by path or modification time."""
    return {"weights": model_fingerprint(name_or_path)}


def store_identity(directory: str | Path) -> dict[str, Any]:
    """The sample store's parameters and the exact bytes of its records."""
    store = ResultStore(Path(directory))
    if not store.manifest_path.is_file():
        raise FileNotFoundError(f"no result store at {directory}")
    digest = hashlib.sha256(store.records_path.read_bytes() if store.records_path.exists() else b"").hexdigest()
    return {"params_fingerprint": store.manifest().get("params_fingerprint"), "records_sha256": digest[:16]}


class ForeignKAtNStore(ValueError):
    """The K@N samples were not drawn from the model being fine-tuned (the IDK set would be someone else's)."""

def check_k_at_n_store_matches(store: ResultStore, base_model: str) -> None:
    """The IDK dataset is model-specific: its samples must come from ``base_model``'s weights as they are now.

    Raises :class:`ForeignKAtNStore` when the store's model hash differs (another model, or
    retrained weights at the same path).
    """
    recorded = ((store.manifest().get("params") or {}).get("model") or {}).get("weights")
    current = model_fingerprint(base_model)
    if recorded != current:
        raise ForeignKAtNStore(f"K@N store {store.directory} was sampled from weights {recorded}, not from "
                              f"{base_model!r} ({current}); sample again (or set allow_foreign_k_at_n)")


def items_digest(items: Sequence[BenchmarkItem]) -> str:
    """The items by content, audio bytes included."""
    return items_fingerprint(items)


@dataclass
class CrossModal:
    """Train-on-one-modality / test-on-the-others experiments with cached adapters and stores.

    ``eval_items``: the benchmark items evaluated (all modalities). ``train_items``: the items
    whose K@N samples form the IDK sets (default: ``eval_items``, the paper's setting).
    ``adapters``: pre-trained adapter folders by ``(train_task, alpha)`` (e.g. trained with
    ``torchrun ... train_cli sft --deepspeed``), used instead of training in-process.
    """

    config: CrossModalConfig
    eval_items: list[BenchmarkItem]
    train_items: list[BenchmarkItem] | None = None
    adapters: dict[tuple[str, float], str] = field(default_factory=dict)
    # Where each score's per-output judge log goes (core.sample_log); None: no log. Not part of
    # any cache key: it changes no result.
    sample_log_dir: Path | None = None

    def __post_init__(self) -> None:
        self.eval_items = list(self.eval_items)
        self.train_items = list(self.train_items) if self.train_items is not None else self.eval_items
        self.cache = Path(self.config.cache_dir)
        self._base_identity = model_identity(self.config.base_model)
        self._normalizer = None

    # ---------------------------------------------------------------- training

    def sft_config(self, train_task: str, alpha: float | None = None):
        overrides = dict(self.config.sft)
        if alpha is not None:
            overrides["alpha"] = float(alpha)
        return LoraSFTConfig.for_modality(train_task, **overrides)

    def _train_items_of(self, task: str) -> list[BenchmarkItem]:
        return [it for it in self.train_items if it.task == task]

    def adapter_key(self, train_task: str, alpha: float | None = None) -> str:
        config = self.sft_config(train_task, alpha)
        # The keys "knn_store" and "knn_normalizer" name cached adapters already trained: kept as written.
        params = {
            "base": self._base_identity, "knn_store": store_identity(self.config.k_at_n_store),
            "train_items": items_digest(self._train_items_of(train_task)), "k": self.config.k, "n": self.config.n,
            "train_prompt": self.config.train_prompt, "sft": config.training_fingerprint(),
            "deepspeed": load_deepspeed_config(self.config.deepspeed_config) if self.config.deepspeed_config else None,
        }
        if self.k_at_n_normalizer_kind != "rule":  # the rules were the only judge before: their keys stay
            params["knn_normalizer"] = self.k_at_n_normalizer_kind
        return params_fingerprint(params)

    @property
    def k_at_n_normalizer_kind(self) -> str:
        return self.config.k_at_n_normalizer or self.config.normalizer

    def adapter_dir(self, train_task: str, alpha: float | None = None) -> Path:
        config = self.sft_config(train_task, alpha)
        return self.cache / "adapters" / f"{train_task}-a{config.alpha:g}-{self.adapter_key(train_task, alpha)}"

    def adapter(self, train_task: str, alpha: float | None = None) -> Path:
        """The adapter trained on ``train_task``'s IDK set: reused when cached, else trained now."""
        config = self.sft_config(train_task, alpha)
        given = self.adapters.get((train_task, float(config.alpha)))
        if given is not None:
            verify_adapter(given)
            return Path(given)
        if self.config.use_shipped:
            shipped = self.shipped_adapter(train_task, alpha)
            if shipped is not None:
                verify_adapter(shipped)
                return shipped
        out = self.adapter_dir(train_task, alpha)
        summary = read_summary(out)
        if summary and summary.get("complete"):
            try:
                verify_adapter(out)
                return out
            except AdapterCheckError:
                pass  # a damaged cache entry is retrained, never used
        store, dataset = self._idk_dataset(train_task)
        if not dataset.examples:
            raise ValueError(f"no IDK training example for {train_task!r} (skipped: {dataset.summary()['skipped']})")
        data_info = {"idk_dataset": dataset.summary(), "train_task": train_task,
                     "sampling": store.manifest().get("params", {}).get("settings")}
        train_lora_sft(self.config.base_model, dataset.examples, out, config,
                       deepspeed_config=self.config.deepspeed_config, device=self.config.device,
                       progress=self.config.progress, extra_summary=data_info)
        return out

    def _idk_dataset(self, train_task: str):
        """(K@N store, IDK dataset of ``train_task``), built once per task."""
        cached = getattr(self, "_datasets", None)
        if cached is None:
            cached = self._datasets = {}
        if train_task not in cached:
            store = ResultStore(Path(self.config.k_at_n_store))
            if not self.config.allow_foreign_k_at_n:
                check_k_at_n_store_matches(store, self.config.base_model)
            judge = self.normalizer() if self.k_at_n_normalizer_kind == self.config.normalizer else \
                self._resolve_normalizer(self.k_at_n_normalizer_kind)
            cached[train_task] = (store, build_idk_dataset(self._train_items_of(train_task), store, self.config.k,
                                                           self.config.n, prompt_method=self.config.train_prompt,
                                                           normalizer=judge))
        return cached[train_task]

    def training_key(self, train_task: str, alpha: float | None = None) -> str | None:
        """The portable content key of this adapter's training (:func:`shipped.training_key`);
        ``None`` when the base model is not a local folder small enough to hash."""

        digest = model_content_digest(self.config.base_model)
        if digest is None:
            return None
        _, dataset = self._idk_dataset(train_task)
        deepspeed = load_deepspeed_config(self.config.deepspeed_config) if self.config.deepspeed_config else None
        return shipped_training_key(model_digest=digest, examples=dataset.examples,
                                    sft=self.sft_config(train_task, alpha).training_fingerprint(),
                                    train_prompt=self.config.train_prompt, deepspeed=deepspeed)

    def shipped_adapter(self, train_task: str, alpha: float | None = None) -> Path | None:
        """The shipped adapter trained exactly as this one would be, if the package has it."""
        if not read_manifest().get("adapters"):
            return None  # nothing shipped: do not even hash the model
        key = self.training_key(train_task, alpha)
        return find_shipped(key) if key else None

    # ---------------------------------------------------------------- evaluation

    def eval_settings(self):
        return GenerationSettings(max_new_tokens=self.config.eval_max_new_tokens,  # greedy unless eval_decoding
                                  **({"seed": self.config.seed, **self.config.eval_decoding}
                                     if self.config.eval_decoding else {}))

    def eval_store_dir(self, adapter_dir: Path | None) -> Path:
        params = {"base": self._base_identity, "adapter": directory_fingerprint(adapter_dir) if adapter_dir else None,
                  "method": self.config.eval_method, "settings": self.eval_settings().to_dict(),
                  "items": items_digest(self.eval_items), "dtype": self.config.dtype}
        name = adapter_dir.name if adapter_dir else "base"
        return self.cache / "eval" / f"{name}-{params_fingerprint(params)}"

    def evaluate(self, adapter_dir: Path | None) -> ResultStore:
        """``eval_method`` outputs (greedy unless ``eval_decoding``) of base (+ adapter: merged in fp32, unmerged
        in bf16, see hf_loading.merges_exactly_enough) on every eval item; resumable."""


        directory = self.eval_store_dir(adapter_dir)  # named after the content of everything it depends on
        if (directory / "manifest.json").is_file() and not pending_items(ResultStore(directory), self.eval_items,
                                                                          self.config.eval_method):
            return ResultStore(directory)
        backend = load_backend(self.config.base_model, batch_size=self.config.eval_batch_size,
                               device=self.config.device or "auto", dtype=self.config.dtype,
                               adapter=str(adapter_dir) if adapter_dir else None)
        try:
            run_method(backend, self.eval_items, self.config.eval_method, directory, settings=self.eval_settings(),
                       progress=self.config.progress)
        finally:
            backend.close()
            del backend
        return ResultStore(directory)

    def baseline_store(self) -> ResultStore:
        return self.evaluate(None)

    @staticmethod
    def _resolve_normalizer(kind: str):
        return resolve_normalizer(kind)

    def normalizer(self):
        if self._normalizer is None:
            self._normalizer = self._resolve_normalizer(self.config.normalizer)
        return self._normalizer

    def score(self, store: ResultStore, tasks: Iterable[str]) -> dict[str, Any]:
        """Paired scores of ``store`` against the base model's run, on the eval items of ``tasks``."""
        wanted = {it.id for it in self.eval_items if it.task in set(tasks)}
        pred = [r for r in records_from_store(store, self.eval_items) if r["id"] in wanted]
        base = [r for r in records_from_store(self.baseline_store(), self.eval_items) if r["id"] in wanted]
        log = None
        if self.sample_log_dir is not None:
            log = Path(self.sample_log_dir) / f"{store.directory.name}-{'+'.join(sorted(set(tasks)))}-vs-baseline.jsonl"
        return score_records(pred, base, self.normalizer(), n_boot=self.config.n_boot, seed=self.config.seed,
                             log_samples=log)

    # ---------------------------------------------------------------- experiments

    def _row(self, train_task: str, test_label: str, tests: Sequence[str], alpha: float | None,
             adapter_dir: Path, store: ResultStore) -> dict[str, Any]:
        result = self.score(store, tests)
        summary = read_summary(adapter_dir) or {}
        idk = (summary.get("data") or {}).get("idk_dataset") or {}
        conv = "_subset" if self.config.convention == "subset" else ""
        row: dict[str, Any] = {
            "train": train_task, "test": test_label, "alpha": self.sft_config(train_task, alpha).alpha,
            "in_domain": train_task in tests and self.train_items is self.eval_items,
            "n": result.get("n"), "acc": result.get("acc"), "tru": result.get("tru"), "rej": result.get("rej"),
            "rel": result.get("rel"), "n_invalid": result.get("n_invalid"),
            "baseline_acc": (result.get("baseline") or {}).get("acc"),
            "baseline_rej": (result.get("baseline") or {}).get("rej"),
            "baseline_rel": (result.get("baseline") or {}).get("rel"),
            "d_con": result.get("d_con" + conv), "d_hum": result.get("d_hum" + conv), "rgi": result.get("rgi" + conv),
            "rgi_reason": result.get("rgi" + conv + "_reason"),
            "rgi_class": result.get("rgi"), "rgi_subset": result.get("rgi_subset"),
            "ncc": result.get("ncc"), "ncr": result.get("ncr"), "ncw": result.get("ncw"),
            "nwc": result.get("nwc"), "nwr": result.get("nwr"), "nww": result.get("nww"),
            "n_errors": result.get("n_errors"), "convention": self.config.convention,
            "train_examples": idk.get("examples"), "train_idk_fraction": idk.get("idk_fraction"),
            "adapter": str(adapter_dir), "eval_store": str(store.directory),
        }
        ci = result.get("ci") or {}
        for name, key in (("acc", "acc"), ("rej", "rej"), ("rel", "rel"), ("d_con", "d_con" + conv),
                          ("d_hum", "d_hum" + conv), ("rgi", "rgi" + conv)):
            interval = ci.get(key) or {}
            row[f"{name}_low"], row[f"{name}_high"] = interval.get("low"), interval.get("high")
        return row

    def run_cell(self, train_task: str, test_tasks: Sequence[str], *, alpha: float | None = None,
                 pooled: bool = False) -> list[dict[str, Any]]:
        adapter_dir = self.adapter(train_task, alpha)
        store = self.evaluate(adapter_dir)
        rows = [self._row(train_task, t, [t], alpha, adapter_dir, store) for t in test_tasks]
        if pooled and len(test_tasks) > 1:
            rows.append(self._row(train_task, "+".join(test_tasks), list(test_tasks), alpha, adapter_dir, store))
        return rows

    @property
    def modalities(self) -> list[str]:
        """The modality groups of the evaluated items, in the order the benchmark lists them."""
        return list(dict.fromkeys(it.task for it in self.eval_items))

    def results(self, train_tasks: Sequence[str] | None = None, test_tasks: Sequence[str] | None = None):
        """One row per (train modality, test modality), by default every modality of the evaluated
        items both ways: the cells :func:`reliable_lalm.reporting.table10` (11, 12) and
        :func:`~reliable_lalm.reporting.figure3` lay out."""
        rows = []
        for train in (self.modalities if train_tasks is None else train_tasks):
            rows += self.run_cell(train, list(self.modalities if test_tasks is None else test_tasks))
        return pd.DataFrame(rows)

    def alpha_sweep(self, alphas: Sequence[float] = PAPER_ALPHA_SWEEP, *, train_task: str = "speech",
                    test_tasks: Sequence[str] = ("sound", "music")):
        """Figure 4's cells (:func:`reliable_lalm.reporting.figure4`): train on ``train_task`` with each
        LoRA alpha, test on ``test_tasks`` (and pooled); the defaults are the paper's (speech, tested
        on sound and music)."""
        rows = []
        for alpha in alphas:
            rows += self.run_cell(train_task, list(test_tasks), alpha=alpha, pooled=True)
        return pd.DataFrame(rows)
