"""The model registry: a name (or a local folder, or a Hugging Face hub id) to a backend.

An entry says which backend class serves the model (``"module:Class"``, imported only when the
model is loaded), where its weights are (a hub id, a local folder, or a function that returns
one), and how the paper labels it in Table 3 (``paper_label``), so our rows are matched to the
paper's by declaration, never by string guessing; a model the paper does not have has no label
and its rows are shown without paper values.

A path or hub id that is not a registered name is served by the backend registered for its
checkpoint's ``model_type`` (read from its ``config.json``, locally or in the HF cache).

A checkpoint of a served family (:data:`reliable_lalm.models.families.FAMILIES`) needs no entry: its
``model_type`` picks the backend. A named checkpoint is one :class:`ModelEntry` in
:data:`BUILTIN_MODELS` (or, for another package, an entry point in the group ``reliable_lalm.models``,
as the embedded demo does); its backend and extras come from its family's row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reliable_lalm.core import jsonio
from reliable_lalm.core.plugins import entry_point_objects, load_object
from reliable_lalm.models.families import FAMILIES, base_model, families_by_model_type
from reliable_lalm.models.training_adapter import TrainingAdapter, TrainingNotSupported

ENTRY_POINT_GROUP = "reliable_lalm.models"


class UnknownModelError(ValueError):
    """A model name that is not registered, not a local folder and not in the Hugging Face cache."""


@dataclass(frozen=True)
class ModelEntry:
    name: str  # registry name, used in parameters and results paths
    backend: str  # "module:Class"; the class has from_pretrained(source, **kwargs)
    source: str | Callable[[], str]  # hub id or local folder (or a function returning one)
    paper_label: str | None = None  # the row label of this model in the paper's Table 3
    family: str = ""  # model family (a FAMILIES key or a model_type), for grouping and training
    description: str = ""
    # Optional packages the backend needs (a pip extra); None: those of its family's row.
    extra_requirements: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # default from_pretrained keyword arguments
    # A substitute's registry name of the model it stands in for (the paper-dryrun profile's random 7B
    # layout for Qwen2-Audio-7B-Instruct): its table rows take that model's paper label.
    stands_in_for: str | None = None

    def __post_init__(self) -> None:
        if self.extra_requirements is None:  # a served family's checkpoint needs what its row says
            family = FAMILIES.get(self.family) or families_by_model_type().get(self.family)
            object.__setattr__(self, "extra_requirements", family.extra_requirements if family else ())

    def table_label(self) -> str | None:
        """The paper's label of this model's rows: its own, else that of the model it stands in for."""
        if self.paper_label or not self.stands_in_for:
            return self.paper_label
        return registered_models()[self.stands_in_for].paper_label

    def resolve_source(self) -> str:
        return str(self.source() if callable(self.source) else self.source)

    @property
    def built_on_first_use(self) -> bool:
        """Whether resolving the source builds a checkpoint (listing the registry must not)."""
        return isinstance(self.source, _LazyReference)

    def backend_class(self):
        return load_object(self.backend)

    def load(self, **kwargs):
        """The ready backend (weights loaded): ``backend_class().from_pretrained(source, **kwargs)``."""
        return self.backend_class().from_pretrained(self.resolve_source(), **{**self.options, **kwargs})


class _LazyReference:
    """A ``"module:function"`` source, imported and called only when the model is loaded."""

    def __init__(self, reference: str):
        self.reference = reference

    def __call__(self) -> str:
        return str(load_object(self.reference)())

    def __repr__(self) -> str:
        return f"<built by {self.reference}>"


def backends_by_model_type() -> dict[str, str]:
    """transformers ``model_type`` -> the backend serving it, from the families' rows."""
    return {t: f.backend for t, f in families_by_model_type().items()}


def named_checkpoint(name: str, family: str, source, **fields: Any) -> ModelEntry:
    """A :class:`ModelEntry` of a checkpoint of a served family: the backend is the family's row's."""
    return ModelEntry(name, FAMILIES[family].backend, source, family=family, **fields)


BUILTIN_MODELS: dict[str, ModelEntry] = {e.name: e for e in (
    named_checkpoint("qwen2-audio-7b-instruct", "qwen2_audio", "Qwen/Qwen2-Audio-7B-Instruct",
                     paper_label="Qwen2-Audio-Instruct", description="Qwen2-Audio-7B-Instruct, the paper's main model"),
    # The paper-dryrun profile's substitute (reliable_lalm.models.standin): built on first use; its
    # Table 3 rows carry the label of the model it stands in for (the dry run lays out the paper's rows).
    named_checkpoint("qwen2-audio-7b-layout-random", "qwen2_audio",
                     _LazyReference("reliable_lalm.models.standin:layout_random_source"),
                     stands_in_for="qwen2-audio-7b-instruct",
                     description="random weights in the Qwen2-Audio-7B-Instruct layout, scaled down, with the real "
                                 "processor configuration (CPU dry run of the paper profile; answers are noise)"),
    named_checkpoint("qwen2-audio-7b", "qwen2_audio", "Qwen/Qwen2-Audio-7B",
                     description="Qwen2-Audio-7B base (pre-trained, not instruction-tuned)"),
    named_checkpoint("audio-flamingo-3", "audioflamingo3", "nvidia/audio-flamingo-3-hf",
                     description="Audio Flamingo 3 (NVIDIA), transformers-native checkpoint"),
    named_checkpoint("qwen2.5-omni-7b", "qwen2_5_omni_thinker", "Qwen/Qwen2.5-Omni-7B",
                     description="Qwen2.5-Omni-7B, thinker only (text output)"),
    named_checkpoint("qwen2.5-omni-3b", "qwen2_5_omni_thinker", "Qwen/Qwen2.5-Omni-3B",
                     description="Qwen2.5-Omni-3B, thinker only (text output)"),
    named_checkpoint("qwen3-omni-30b-a3b-instruct", "qwen3_omni_moe_thinker", "Qwen/Qwen3-Omni-30B-A3B-Instruct",
                     description="Qwen3-Omni-30B-A3B-Instruct (MoE), thinker only (text output)"),
    # The paper's other Table 3 models run in their own environments (old transformers pins) as
    # isolated workers; the command comes from environment variables (models.worker.CONFIGURED_WORKERS,
    # docs/workers.md) and an unset one is a one-line WorkerNotConfigured when the model is used.
    ModelEntry("qwen-audio-chat", "reliable_lalm.models.worker:WorkerBackend",
               _LazyReference("reliable_lalm.models.worker:qwen_audio_chat_command"), paper_label="Qwen-Audio-Chat",
               family="worker", description="Qwen-Audio-Chat (Chu et al., 2023) through its worker "
                                            "(RLALM_QWEN_AUDIO_CHAT_PYTHON, RLALM_QWEN_AUDIO_CHAT_DIR)"),
    ModelEntry("salmonn", "reliable_lalm.models.worker:WorkerBackend",
               _LazyReference("reliable_lalm.models.worker:salmonn_command"), paper_label="SALMONN",
               family="worker", description="SALMONN v1 (Tang et al., 2024) through its worker "
                                            "(RLALM_SALMONN_PYTHON, RLALM_SALMONN_REPO/CKPT/WHISPER/BEATS/VICUNA)"),
    named_checkpoint("voxtral-mini-3b", "voxtral", "mistralai/Voxtral-Mini-3B-2507",
                     description="Voxtral Mini 3B (Mistral AI, 2507); needs the extra `voxtral` (mistral-common)"),
    named_checkpoint("voxtral-small-24b", "voxtral", "mistralai/Voxtral-Small-24B-2507",
                     description="Voxtral Small 24B (Mistral AI, 2507); needs the extra `voxtral` (mistral-common)"),
)}


# "<prefix>:<spec>" -> a function building the entry of such a spec (endpoints, isolated workers)
SPEC_FACTORIES: dict[str, str] = {
    "openai": "reliable_lalm.models.openai_audio:model_entry",  # openai:<model>@<base_url>
    "worker": "reliable_lalm.models.worker:model_entry",  # worker:<command line> (isolated environment)
}


def registered_models() -> dict[str, ModelEntry]:
    """Built-in entries plus those of installed packages (entry points), by name."""
    entries = dict(BUILTIN_MODELS)
    for name, obj in entry_point_objects(ENTRY_POINT_GROUP).items():
        entry = obj() if callable(obj) and not isinstance(obj, ModelEntry) else obj
        if not isinstance(entry, ModelEntry):
            raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not a ModelEntry")
        entries[entry.name] = entry
    return entries


def _config_of(source: str) -> dict[str, Any] | None:
    """A checkpoint's config.json: from a local folder, or from the HF cache without any download."""
    path = Path(source).expanduser()
    if path.is_dir():
        config = path / "config.json"
        return jsonio.load_file(config) if config.is_file() else None
    try:
        # local import: huggingface_hub comes with transformers, which `rlalm score` does without
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        cached = try_to_load_from_cache(source, "config.json")
    except ValueError:  # not a valid hub id either (e.g. a folder path that does not exist)
        return None
    if isinstance(cached, str) and os.path.isfile(cached):
        return jsonio.load_file(cached)
    return None


def resolve_model(name_or_path: str) -> ModelEntry:
    """The entry for a registered name, a local checkpoint folder, or a hub id in the HF cache.

    Raises :class:`UnknownModelError` at once (no network) for anything else.
    """
    prefix, sep, _ = str(name_or_path).partition(":")
    if sep and prefix in SPEC_FACTORIES:
        return load_object(SPEC_FACTORIES[prefix])(str(name_or_path))
    entries = registered_models()
    if name_or_path in entries:
        return entries[name_or_path]
    config = _config_of(str(name_or_path))
    if config is None:
        raise UnknownModelError(
            f"model {name_or_path!r}: not a registered name ({', '.join(sorted(entries))}), not a local "
            f"folder with a config.json, and not in the Hugging Face cache; download it first "
            f"(`huggingface-cli download {name_or_path}`) or pass a local path")
    model_type = str(config.get("model_type", ""))
    backends = backends_by_model_type()
    if model_type not in backends:
        raise UnknownModelError(f"model {name_or_path!r}: no backend for model_type {model_type!r} "
                                f"(supported: {', '.join(sorted(backends))})")
    # A registered model at the same source keeps its paper label (a local copy of the 7B).
    same = [e for e in entries.values() if not callable(e.source) and e.source == str(name_or_path)]
    label = same[0].paper_label if same else None
    return ModelEntry(str(name_or_path), backends[model_type], str(name_or_path),
                      paper_label=label, family=model_type)


def load_backend(name_or_path: str, **kwargs):
    """The ready backend of a registered name, a local checkpoint folder or a cached hub id, by the
    registry (a folder's ``config.json`` model type picks the backend): what every command loads through."""
    return resolve_model(str(name_or_path)).load(**kwargs)


# --------------------------------------------------------------------------------------------------
# Training adapters (each family's lives beside its backend; its row names it)


def adapter_for_model_type(model_type: str) -> TrainingAdapter:
    """The training adapter of the family serving a transformers ``model_type``."""
    family = families_by_model_type().get(str(model_type))
    if family is None:
        raise TrainingNotSupported(f"no backend serves model_type {model_type!r}, so none can train it "
                                   f"(registered: {', '.join(sorted(families_by_model_type()))})")
    return family.training_adapter()


def adapter_for_model(model) -> TrainingAdapter:
    """The adapter of a loaded transformers model (PEFT wrappers unwrapped), by its ``config.model_type``."""
    return adapter_for_model_type(base_model(model).config.model_type)


def adapter_for_source(name_or_path) -> TrainingAdapter:
    """The adapter of a model name, checkpoint folder or cached hub id, as the registry resolves it
    (the entry's family, else its checkpoint's model_type; nothing is loaded). A backend outside the
    families (an endpoint, a worker) cannot be trained."""
    entry = resolve_model(str(name_or_path))
    if entry.family in FAMILIES:
        return FAMILIES[entry.family].training_adapter()
    if entry.family and entry.family in families_by_model_type():
        return adapter_for_model_type(entry.family)
    if entry.backend not in {f.backend for f in FAMILIES.values()}:
        raise TrainingNotSupported(f"{entry.name}: its backend {entry.backend} cannot be fine-tuned here")
    config = _config_of(entry.resolve_source()) or {}
    return adapter_for_model_type(str(config.get("model_type", "")))
