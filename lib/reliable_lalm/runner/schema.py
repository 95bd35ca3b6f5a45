"""The parameters of every notebook, typed: one pydantic model per notebook.

Each notebook's ``parameters`` cell, the checks of a profile and of an injected parameter, and the
profile defaults (what ``tables/<profile>/`` means, :mod:`reliable_lalm.runner.outputs`) all derive
from these models; ``tests/test_notebook_sources.py`` checks every committed parameters cell against
its model (names, order, types, defaults and help text) and ``python tools/check_notebooks.py --fix``
rewrites a cell from its model.

To add a parameter to a notebook: add a field to its model here (``BaseParameters`` for all of them),
with its default and a ``description`` (the cell's ``# comment``), run
``python tools/check_notebooks.py --fix`` and use the name in the notebook.

A notebook without a model here (a user's own ``NN_name.ipynb``, a test fixture) gets a model built
from its parameters cell's annotations (:func:`model_from_declarations`).
"""
from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, Mapping, NamedTuple, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reliable_lalm.methods.llm_judge import HF_PREFIX, NORMALIZER_KINDS, normalizer_kind_error
from reliable_lalm.models.families import LORA_TARGETS
from reliable_lalm.training.table9 import ALPHA_READINGS

PROFILE_KEY = "profile"


class Parameter(NamedTuple):
    """One declared notebook parameter: annotation text, default value and ``# comment``."""

    type_name: str
    default: Any
    comment: str


def renamed_hint(name: str) -> str:
    """' (renamed X)' for a parameter of an older release (knn_* read as k-nearest-neighbours), else ''."""
    if name.startswith("knn_"):
        return f" (renamed {'k_at_n_' + name.removeprefix('knn_')})"
    return ""


class BaseParameters(BaseModel):
    """The 13 parameters every notebook declares (the first lines of each parameters cell).

    Values are checked as JSON would carry them, strictly: ``True`` is no ``int``, ``"3"`` is no
    ``int``, an ``int`` is a fine ``float`` (YAML writes 1 for 1.0).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    profile: str = Field("demo", description="parameter profile (params/<profile>.yaml); names the output folders")
    model: str = Field("demo", description='"demo" (shipped checkpoint), a local checkpoint folder, or a hub id in the HF cache')
    benchmark: str = Field("synthetic", description='"synthetic" (demo test split) or an MMAU-schema JSON file')
    audio_dir: str | None = Field(None, description="folder the benchmark's audio_id paths are relative to (default: beside the JSON)")
    limit_per_task: int | None = Field(None, ge=1, description="evaluate only the first N items of each modality (ci profile)")
    batch_size: int | None = Field(None, ge=1, description="inference batch size (None: chosen by the engine)")
    device: str = Field("auto", description='"auto", "cpu" or "cuda"')
    normalizer: str = Field("rule", description='"rule", "auto", "openai" or "all" (the paper: the LLM judges every output); key from OPENAI_API_KEY')
    k_at_n_normalizer: str | None = Field(None, description="what judges the K@N samples (04-07); None: the same as normalizer")
    decoding: str = Field("greedy", description='"greedy" (the paper states none) or "generation_config" (the checkpoint\'s published sampling)')
    few_shot_file: str | None = Field(None, description="MCoT few-shot examples (JSON); None: the checkpoint's training.json")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% confidence intervals (0: none)")
    seed: int = Field(0, description="seed of sampling and of the bootstrap")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "mps") or value.startswith("cuda"):
            return value
        raise ValueError("must be auto, cpu, mps or cuda[:N]")

    @field_validator("normalizer")
    @classmethod
    def _normalizer(cls, value: str) -> str:
        if normalizer_kind_error(value) is None:
            return value
        raise ValueError(f"is not a normalizer kind ({', '.join((*NORMALIZER_KINDS, f'{HF_PREFIX}<model>'))})")


class KAtNParameters(BaseParameters):
    """The K@N sampling pass (notebooks 06 and 09, and every LoRA notebook)."""

    k_at_n_samples: int = Field(5, ge=1, description="N of K@N: sampled answers per item (the paper: 5)")
    k_at_n_temperature: float = Field(0.5, ge=0, description="sampling temperature of the K@N pass (not stated in the paper; paper profile: 1.0)")
    k_at_n_top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the K@N pass (1.0: off)")


class SftParameters(KAtNParameters):
    """The K@N IDK dataset and the LoRA SFT (notebooks 04, 05, 07, 08)."""

    k_at_n_k: int = Field(4, ge=0, description="K of K@N: an item keeps its answer when at least K of the N samples are correct (paper: 5@5)")
    sft_learning_rate: float = Field(3e-3, gt=0, description="LoRA SFT learning rate; the paper's 3e-5 (Table 9) is for the 7B model")
    sft_epochs: int = Field(10, ge=1, description="passes over the IDK set (paper: 1; the tiny demo needs more)")
    sft_batch_size: int = Field(8, ge=1, description="micro-batch of the LoRA SFT")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (Table 9)")
    lora_alpha: float | None = Field(None, gt=0, description="None: Table 9's alpha of the training modality under lora_alpha_reading")
    lora_alpha_reading: str = Field("32-32-16", description='Table 9\'s alpha row (sound-music-speech): "32-32-16" or "32-16-16" (docs/paper_settings.md)')
    lora_targets: str = Field("language_model_only", description='or "paper_names": Table 9\'s q/k/v names as PEFT reads them (audio encoder too)')

    @field_validator("lora_alpha_reading")
    @classmethod
    def _alpha_reading(cls, value: str) -> str:
        if value in ALPHA_READINGS:
            return value
        raise ValueError("is not a reading of Table 9's alpha row (32-32-16 or 32-16-16, docs/paper_settings.md)")

    @field_validator("lora_targets")
    @classmethod
    def _lora_targets(cls, value: str) -> str:
        if value in LORA_TARGETS:
            return value
        raise ValueError(f"must be {' or '.join(LORA_TARGETS)}")


class Baselines(BaseParameters):
    table3_models: list = Field(["audio-flamingo-3-tiny-random"], description="further models (registry names, checkpoint folders) for Table 3; the demo's is a random-weight second family")


class IdkPrompting(BaseParameters):
    table3_models: list = Field([], description='further models (registry names, checkpoint folders) for Table 3, e.g. ["audio-flamingo-3-tiny-random"] (the demo\'s random-weight second family)')


class McotAndAgent(BaseParameters):
    pass


class Sft(SftParameters):
    modality: str = Field("sound", description="training modality: its IDK set trains the adapter, the other two test it")


class CrossModal(SftParameters):
    pass


class IdkThreshold(KAtNParameters):
    pass


class LoraAlphaAblation(SftParameters):
    train_modality: str = Field("speech", description="the modality the adapters are trained on (paper: speech)")
    alphas: list = Field([4, 16, 64], description="LoRA alphas of the sweep (the paper's axis values are not in its text)")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list) -> list:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
            return value
        raise ValueError("must be a non-empty list of positive numbers")


class AbstentionBeyondThePaper(SftParameters):
    ece_bins: int = Field(10, ge=1, description="bins of the ECE and the reliability diagrams")
    ece_binning: str = Field("equal-width", description='"equal-width" or "equal-mass" (the table shows the other one beside it)')
    coverages: list = Field([0.5, 0.8, 0.9], description="coverages at which selective accuracy and Rel are reported")
    confidence_targets: list = Field([0.5, 0.75, 0.9], description="t of confidence-target scoring (wrong answer costs t/(1-t))")
    with_lora: bool = Field(True, description="compare the LoRA adapters of notebooks 04/05 too (trained here if not cached)")


class UncertaintyAndGuarantees(KAtNParameters):
    risk_alpha: float = Field(0.1, description="the guarantee: at most this share of wrong answers among the answered ones ...")
    risk_delta: float = Field(0.1, description="... with probability at least 1 - risk_delta over the calibration set")
    risk_procedure: str = Field("bonferroni", description='Learn-then-Test\'s family-wise procedure: "bonferroni" or "fixed-sequence"')
    calibrate_on: str = Field("sound", description="the modality whose threshold is carried to the others")
    verbalized_max_new_tokens: int = Field(8, description="reply length of the 0-100 verbalised-confidence prompt")
    chance_permutations: int = Field(1000, description='random orders behind the "no better than chance" p-value of each AURC')


# Notebook stem -> its parameters. A notebook of notebooks/ missing here fails the tests.
SCHEMAS: dict[str, type[BaseParameters]] = {
    "01_baselines": Baselines,
    "02_idk_prompting": IdkPrompting,
    "03_mcot_and_agent": McotAndAgent,
    "04_sft": Sft,
    "05_cross_modal": CrossModal,
    "06_idk_threshold": IdkThreshold,
    "07_lora_alpha_ablation": LoraAlphaAblation,
    "08_abstention_beyond_the_paper": AbstentionBeyondThePaper,
    "09_uncertainty_and_guarantees": UncertaintyAndGuarantees,
}


# ------------------------------------------------------------------------------------------------
# Annotations as text (the parameters cell) and back
# ------------------------------------------------------------------------------------------------

# The names a parameters cell's annotation may use.
_ANNOTATION_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
                     "tuple": tuple, "List": list, "Dict": dict, "Tuple": tuple, "None": None,
                     "Optional": Optional, "Union": Union, "Literal": Literal, "Any": Any, "object": Any}


def type_name(annotation: Any) -> str:
    """``str | None`` -> ``"str | None"``: the annotation as a parameters cell writes it."""
    if annotation is type(None) or annotation is None:
        return "None"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is Union:
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def annotation_from_text(text: str) -> Any:
    """The type a parameters cell's annotation text names; ValueError for anything else."""
    try:
        return eval(compile(text, "<annotation>", "eval"), {"__builtins__": {}}, dict(_ANNOTATION_NAMES))  # noqa: S307 - names above only
    except Exception:  # noqa: BLE001 - any failure means the annotation is not one we can check
        raise ValueError(f"unsupported annotation {text!r}") from None


def _json_value(value: Any) -> str:
    """The value as JSON text: profiles and papermill carry JSON-like values, and pydantic's strict
    JSON mode is exactly the rule wanted (an int is a float, a list is a tuple, a bool is no int)."""
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        raise ValueError(f"{type(value).__name__} {value!r} is not a parameter value (JSON-like values only)") from None


def _message(error: Mapping[str, Any], value: Any, annotation_text: str | None) -> str:
    if error.get("type") == "value_error":
        return str(error.get("ctx", {}).get("error", error.get("msg")))
    if annotation_text is not None and error.get("type", "").endswith(("_type", "_parsing", "literal_error", "too_long",
                                                                        "too_short", "none_required")):
        return f"expected {annotation_text}, got {type(value).__name__} {value!r}"
    return str(error.get("msg"))


def check_value(value: Any, annotation: str) -> Any:
    """``value`` converted to the annotation text ``annotation``; ValueError when it does not match."""
    adapter = pydantic.TypeAdapter(annotation_from_text(annotation))
    try:
        return adapter.validate_json(_json_value(value), strict=True)
    except pydantic.ValidationError as err:
        raise ValueError(_message(err.errors()[0], value, annotation)) from None


def declarations(model: type[BaseParameters]) -> dict[str, Parameter]:
    """A model's parameters as a parameters cell declares them (name -> type, default, comment)."""
    return {name: Parameter(type_name(f.annotation), f.get_default(call_default_factory=True), f.description or "")
            for name, f in model.model_fields.items()}


def model_from_declarations(stem: str, declared: Mapping[str, Parameter]) -> type[BaseModel]:
    """A model for a notebook without one in :data:`SCHEMAS`, from its parameters cell."""
    fields = {name: (annotation_from_text(p.type_name), Field(p.default, description=p.comment))
              for name, p in declared.items()}
    return pydantic.create_model(f"Parameters_{stem}", __config__=ConfigDict(extra="forbid", strict=True), **fields)


def validate(stem: str, model: type[BaseModel], params: Mapping[str, Any], *,
             origin: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``params`` (some of the model's fields) checked by ``model``: (converted values, errors).

    Each error names the notebook, the parameter, where its value came from and the cause; the
    parameters not given take the model's defaults for the check.
    """
    errors: list[str] = []
    given: dict[str, str] = {}
    for key, value in params.items():
        src = f" (from {origin[key]})" if origin and key in origin else ""
        if key not in model.model_fields:
            errors.append(f"notebook {stem}: unknown parameter {key!r}{src}{renamed_hint(key)}; {stem} declares: "
                          + (", ".join(model.model_fields) or "(nothing)"))
            continue
        try:
            given[key] = _json_value(value)
        except ValueError as err:
            errors.append(f"notebook {stem}: parameter {key!r}{src}: {err}")
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in given.items()) + "}"
    try:
        checked = model.model_validate_json(text, strict=True)
    except pydantic.ValidationError as err:
        for error in err.errors():
            key = str(error["loc"][0]) if error.get("loc") else "?"
            value = params.get(key)
            src = f" (from {origin[key]})" if origin and key in origin else ""
            if error.get("type", "").endswith(("_type", "_parsing", "literal_error", "none_required")) \
                    or error.get("type") in ("missing",):
                annotation = type_name(model.model_fields[key].annotation) if key in model.model_fields else None
                errors.append(f"notebook {stem}: parameter {key!r}{src}: {_message(error, value, annotation)}")
            else:  # a value of the right type that the parameter does not accept
                message = _message(error, value, None)
                errors.append(f"notebook {stem}: parameter {key!r}{src} = {value!r}: {message[:1].lower()}{message[1:]}")
        return {}, errors
    return {k: getattr(checked, k) for k in given}, errors


def _literal(value: Any) -> str:
    """A default as Python source the parameters cell can hold (double-quoted strings, like black)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell(model: type[BaseModel]) -> str:
    """The text of a notebook's ``parameters`` cell, one ``name: type = default  # help`` per line."""
    lines = []
    for name, p in declarations(model).items():
        line = f"{name}: {p.type_name} = {_literal(p.default)}"
        lines.append(f"{line}  # {p.comment}" if p.comment else line)
    return "\n".join(lines)
