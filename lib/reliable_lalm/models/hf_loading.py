"""Loading checkpoints of every served family (the demo, a local copy of the 7B, a cached hub id).

Also builds the real Qwen2-Audio-7B *architecture* with random weights, for the GPU throughput
benchmark: the timing of a forward pass does not depend on the weights' values, so no download is
needed to measure it.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator

from reliable_lalm import paths
from reliable_lalm.core import jsonio, prompts
from reliable_lalm.models.families import ModelFamily, base_model, family_for_model_type
from reliable_lalm.models.local_tokenizers import qwen2_audio_processor, train_qwen2_audio_tokenizer
from reliable_lalm.models.registry import registered_models

# Qwen2-Audio-7B(-Instruct) config.json, as published on the hub. Checked against third-party copies
# of that file found with the project's code search (a model-architecture test suite's
# QWEN2_AUDIO_SPARSE_CONFIG, and a Rust port whose test parses the pinned config and asserts
# hidden 4096 / 32 layers / 32 heads / 32 KV heads / vocab 156032 / audio token 151646).
# The hub file omits hidden_size, num_hidden_layers, num_attention_heads and num_key_value_heads:
# they take Qwen2Config's defaults (4096, 32, 32, 32). Not read from the hub itself (offline).
QWEN2_AUDIO_7B = {
    "audio": {  # Whisper-large-v3 encoder
        "num_mel_bins": 128, "encoder_layers": 32, "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120, "d_model": 1280, "max_source_positions": 1500,
        "activation_function": "gelu", "scale_embedding": False,
    },
    "text": {
        "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 8192, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "audio_token_index": 151646,
    "chunk_length_s": 30,  # feature-extractor window: 3000 mel frames -> 750 audio tokens
}


# The chat template of Qwen/Qwen2-Audio-7B-Instruct's processor (the hub checkpoint's
# chat_template), with its default system prompt. Reconstructed from public sources, not read from
# the hub (offline): transformers' Qwen2AudioProcessor.default_chat_template ("kept only because
# the hub config is not yet updated", i.e. the hub's template; the installed transformers 5.x copy
# adds `content['type'] == 'audio'` to the audio test) and the same text in alibaba/rtp-llm's
# QwenV2AudioRenderer (rtp_llm/openai/renderers/qwen_v2_audio_renderer.py). Both render our
# conversations identically (tests/test_paper_dryrun.py checks it against the installed transformers).
QWEN2_AUDIO_INSTRUCT_SYSTEM_PROMPT = "You are a helpful assistant."
QWEN2_AUDIO_INSTRUCT_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + QWEN2_AUDIO_INSTRUCT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)
# Qwen2-Audio-7B-Instruct's generation_config.json sampling values (the model card's "published"
# decoding; also in zlai-llm/zlai's Qwen2Audio7BInstructGenerateConfig). The card's example calls
# generate(max_length=256); this project bounds new tokens per method instead.
QWEN2_AUDIO_INSTRUCT_GENERATION = {"do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.7,
                                   "repetition_penalty": 1.1}
# Which keys of a generation_config.json become GenerationSettings (and their "off" values).
PUBLISHED_SAMPLING_KEYS = {"do_sample": False, "top_k": 0, "top_p": 1.0, "temperature": 1.0,
                           "repetition_penalty": 1.0}


def published_generation_settings(source: str) -> dict:
    """The sampling settings of a checkpoint's ``generation_config.json`` (local folder or HF cache),
    as :class:`~reliable_lalm.models.base.GenerationSettings` keywords; a key the file does not
    set takes transformers' default (off). ``FileNotFoundError`` when the checkpoint has no file."""
    path = Path(source).expanduser() / "generation_config.json"
    if not path.is_file():
        cached = None
        try:
            # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(source), "generation_config.json")
        except (ImportError, ValueError):
            pass
        if not isinstance(cached, str):
            raise FileNotFoundError(f"{source}: no generation_config.json (decoding: generation_config needs "
                                    f"the checkpoint's published settings)")
        path = Path(cached)
    data = jsonio.load_file(path)
    out = {k: data.get(k, off) if data.get(k) is not None else off for k, off in PUBLISHED_SAMPLING_KEYS.items()}
    out["do_sample"] = bool(out["do_sample"])
    out["top_k"] = int(out["top_k"])
    for k in ("top_p", "temperature", "repetition_penalty"):
        out[k] = float(out[k])
    return out


def resolve_device(device: str | None = "auto") -> str:
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: Any, device: str):
    """``auto``: bf16 on GPU (what Qwen2-Audio ships in), fp32 on CPU (bf16 matmuls are slow there)."""
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value




class ModelNotAvailable(OSError):
    """The model is neither a local folder nor in the Hugging Face cache (nothing is downloaded)."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds more than tensors and plain containers (it would run code if unpickled)."""


@contextlib.contextmanager
def refusing_pickled_code(what: str | Path) -> Iterator[None]:
    """Turn torch's refusal of a pickle that is more than tensors (``weights_only=True``: a
    ``pytorch_model.bin``, ``adapter_model.bin`` or ``optimizer.pt`` that would run code) into one
    line naming ``what``, instead of a traceback."""

    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol would precede the one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            yield
    except pickle.UnpicklingError as err:
        reason = " ".join(str(err).split())[:200]
        raise UnsafeCheckpointError(f"{what}: refused to load: a pickled file in it holds more than plain tensors "
                                    f"(unpickling it would run code; use safetensors, or delete the file if you "
                                    f"did not write it): {reason}") from None


def _is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).expanduser().exists()


def resolve_model_source(name_or_path: str | Path) -> tuple[str, bool]:
    """``(source, is_local)`` for a model name: ``"demo"`` (the shipped checkpoint), a local folder,
    or a hub id that is already in the Hugging Face cache.

    Checked offline, before transformers is asked: a hub id that is not cached raises
    :class:`ModelNotAvailable` (one line) at once, whether or not ``HF_HUB_OFFLINE`` is set. Loading
    never downloads: without the check, an uncached id hung for minutes on retries, then failed
    with a long traceback.
    """
    entry = registered_models().get(str(name_or_path))
    if entry is not None and not _is_local(name_or_path):  # a registry name ("demo", "qwen2-audio-7b-instruct")
        name_or_path = entry.resolve_source()
    if _is_local(name_or_path):
        return str(Path(name_or_path).expanduser()), True
    name = str(name_or_path)
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id either (HFValidationError)
        cached = None
    if not isinstance(cached, str):
        raise ModelNotAvailable(f"model {name!r} is neither a local folder nor in the Hugging Face cache "
                                f"(nothing is downloaded): run `huggingface-cli download {name}` first, "
                                f"pass a checkpoint folder, or use --model {paths.DEMO_MODEL_NAME}")
    return name, False


def merges_exactly_enough(dtype) -> bool:
    """Whether a LoRA update survives being merged into weights of ``dtype``.

    In fp32 the merge rounds at ~6e-8 of a weight, far below an update (at lr 3e-5 for one epoch
    the update is ~1e-3 of a weight); in bf16 (8 mantissa bits, ~4e-3) the update is about one
    rounding unit, so a large share of it is lost (docs/training.md). Only fp32 is merged.
    """
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    import torch

    return dtype == torch.float32


def attach_adapter(model, adapter: str | Path, dtype, *, merge: bool | None = None):
    """``model`` with the PEFT (LoRA) adapter at ``adapter`` on top, for every model family.

    ``merge=None`` merges it into the weights only when they are fp32 (:func:`merges_exactly_enough`);
    in bf16/fp16 it stays a ``PeftModel`` (LoRA weights in fp32, the update added to each layer's
    output), as a bf16 merge rounds most of a small update away. ``True``/``False`` force either.
    """
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    from peft import PeftModel

    with refusing_pickled_code(adapter):
        model = PeftModel.from_pretrained(model, str(adapter))
    if merge is None:
        merge = merges_exactly_enough(dtype)
    return model.merge_and_unload() if merge else model


def audio_only_processor(processor_class, *, feature_extractor, tokenizer, chat_template=None):
    """``processor_class`` built without image/video sub-processors (those need torchvision).

    The subclass only relaxes the constructor's type check for ``image_processor`` and
    ``video_processor``; tokenization, audio features and audio-token expansion are the class's own.
    Passing images or videos to it fails.
    """
    class AudioOnly(processor_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name in ("image_processor", "video_processor"):
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    AudioOnly.__name__ = AudioOnly.__qualname__ = f"{processor_class.__name__}AudioOnly"
    return AudioOnly(image_processor=None, video_processor=None, feature_extractor=feature_extractor,
                     tokenizer=tokenizer, chat_template=chat_template)


def _missing_vision_backend(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, (ImportError, TypeError, ValueError)) and ("torchvision" in text.lower()
                                                                     or "video_processor" in text
                                                                     or "image_processor" in text)


def _read_chat_template(source: str, local_files_only: bool) -> str | None:
    """The processor's chat template file of a checkpoint (``chat_template.jinja`` or ``.json``)."""
    for name in ("chat_template.jinja", "chat_template.json"):
        path = Path(source) / name
        if not path.is_file():
            try:
                # local import: as transformers (huggingface_hub comes with it)
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, name, local_files_only=local_files_only))
            except Exception:  # noqa: BLE001 - absent file or no network: try the next name
                continue
        text = path.read_text(encoding="utf-8")
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def load_processor(source: str, family: ModelFamily, *, local_files_only: bool = False):
    """The checkpoint's processor; for the Omni families without torchvision, its audio-only form."""
    # local import: listing and resolving models (`rlalm models`) imports no transformers
    import transformers

    processor_class = getattr(transformers, family.processor_class)
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    except Exception as err:  # noqa: BLE001 - decide below whether it is the known vision-backend case
        if not (family.vision_subprocessors and _missing_vision_backend(err)):
            raise
    else:
        if isinstance(processor, processor_class):
            return processor
        if not family.vision_subprocessors:  # e.g. a folder without processor files: AutoProcessor gave a tokenizer
            raise TypeError(f"{source}: AutoProcessor gave {type(processor).__name__}, not {family.processor_class}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    feature_extractor = transformers.WhisperFeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
    template = _read_chat_template(source, local_files_only) or getattr(tokenizer, "chat_template", None)
    return audio_only_processor(processor_class, feature_extractor=feature_extractor, tokenizer=tokenizer,
                                chat_template=template)


def load_model_and_processor(name_or_path: str | Path, *, device: str | None = "auto", dtype: Any = "auto",
                             device_map: Any = None, adapter: str | Path | None = None,
                             merge_adapter: bool | None = None, attn_implementation: str | None = None):
    """``(model, processor)`` of a checkpoint of any family of :data:`~reliable_lalm.models.families.FAMILIES`
    (chosen by its config's ``model_type``), in eval mode, ready for generation.

    ``name_or_path``: a registry name (``"demo"``), a local folder, or a hub id such as
    ``Qwen/Qwen2-Audio-7B-Instruct`` that is already in the Hugging Face cache (nothing is downloaded).
    ``device_map="auto"`` spreads the model over several GPUs (accelerate); otherwise the model is
    moved to ``device``. ``adapter``: a PEFT (LoRA) folder; ``merge_adapter``: :func:`attach_adapter`'s
    ``merge`` (``None``: merged only in fp32).

    The tokenizer pads on the LEFT: batched generation must see every prompt end at the same column.
    """
    # local import: listing and resolving models (`rlalm models`) imports no transformers
    import transformers

    source, local = resolve_model_source(name_or_path)  # fails fast for a model that is not there
    if adapter is not None and not _is_local(adapter):
        raise ModelNotAvailable(f"adapter folder not found: {adapter}")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": not local}  # cached: never ask the hub
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=not local)
        family = family_for_model_type(config.model_type)
        processor = load_processor(source, family, local_files_only=not local)
        # The thinker class loads from a full Omni checkpoint (transformers maps away "thinker."
        # and ignores the talker / token2wav weights).
        with refusing_pickled_code(source):
            model = getattr(transformers, family.model_class).from_pretrained(source, **kwargs)
    except OSError as err:
        if local:
            raise
        raise ModelNotAvailable(f"cannot load {source!r} from the Hugging Face cache (incomplete download?): "
                                f"run `huggingface-cli download {source}` ({' '.join(str(err).split())[:300]})") from err
    if device_map is None:
        model = model.to(device)
    if adapter is not None:
        model = attach_adapter(model, adapter, torch_dtype, merge=merge_adapter)
    model.eval()
    processor.tokenizer.padding_side = "left"
    # What result stores record as the model (checkpoint + adapter).
    model.rlalm_source = {"model": source, "adapter": str(adapter) if adapter is not None else None}
    return model, processor


def audio_tower(model):
    return base_model(model).model.audio_tower


def feature_window_seconds(processor) -> float:
    """Length of audio the feature extractor keeps (30 s for Qwen2-Audio, 4 s for the demo)."""
    fe = processor.feature_extractor
    return float(fe.n_samples) / float(fe.sampling_rate)


def count_parameters(model) -> dict[str, int]:
    m = base_model(model)
    audio = sum(p.numel() for p in m.model.audio_tower.parameters())
    total = sum(p.numel() for p in m.parameters())
    return {"total": total, "audio_encoder": audio, "language_model_and_projector": total - audio}


# --------------------------------------------------------------------------------------------------
# The 7B architecture with random weights (benchmarks only)


def random_weights_7b_config(*, audio_token_index: int | None = None, eos_token_id: int | None = None,
                             pad_token_id: int | None = None):
    """``Qwen2AudioConfig`` of Qwen2-Audio-7B(-Instruct) (see :data:`QWEN2_AUDIO_7B`), for random weights.

    The token ids can be remapped to those of another tokenizer (the benchmark uses the demo's BPE:
    the real tokenizer would need a download); the vocabulary size stays 156032.
    """
    return _config_from(QWEN2_AUDIO_7B, audio_token_index=audio_token_index, eos_token_id=eos_token_id,
                        pad_token_id=pad_token_id)


def scaled_down_7b_spec() -> dict[str, Any]:
    """The 7B layout shrunk to run in a second on a CPU, with the real 30 s window (1500 positions).

    Exercises exactly the code path of ``--random-weights 7b`` (config building, 30 s processor,
    random init) in tests.
    """
    return {
        "audio": {**QWEN2_AUDIO_7B["audio"], "encoder_layers": 1, "encoder_attention_heads": 2,
                  "encoder_ffn_dim": 64, "d_model": 32},
        "text": {**QWEN2_AUDIO_7B["text"], "vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4},
        "audio_token_index": QWEN2_AUDIO_7B["audio_token_index"],
        "chunk_length_s": 30,
    }


def cpu_scale_7b_spec() -> dict[str, Any]:
    """The 7B layout cut to ~100 M parameters for CPU benchmarks where the model's arithmetic, not the
    per-call overhead, dominates (``--random-weights 100m``).

    Audio encoder at Whisper-large-v3's real widths (d_model 1280, 20 heads, FFN 5120, 128 mel bins),
    one layer; language model at the real head size (128) and FFN ratio (11008/4096) with a quarter of
    the width (1024, 8 heads), 4 layers. Cut further than "real widths" because one 4096-wide Qwen2
    layer alone has 202 M parameters. The feature window is 10 s (500 encoder positions) instead of
    30 s (1500): a 10 s clip gives the language model the same 250 audio tokens as the 7B, without the
    7B's padded 20 s of encoder work, which on 2 CPU cores would be most of the run. Vocabulary 2048:
    the local tokenizer has 1024 tokens, and a 156k vocabulary would make the embeddings 3x the model.
    """
    window_s = 10
    return {
        "audio": {**QWEN2_AUDIO_7B["audio"], "encoder_layers": 1, "max_source_positions": 50 * window_s},
        "text": {**QWEN2_AUDIO_7B["text"], "vocab_size": 2048, "hidden_size": 1024, "intermediate_size": 2752,
                 "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8},
        "audio_token_index": QWEN2_AUDIO_7B["audio_token_index"],
        "chunk_length_s": window_s,
    }


def _config_from(spec: dict[str, Any], *, audio_token_index=None, eos_token_id=None, pad_token_id=None):
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2Config

    text = dict(spec["text"])
    if eos_token_id is not None:
        text["eos_token_id"] = eos_token_id
    if pad_token_id is not None:
        text["pad_token_id"] = pad_token_id
    return Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(**spec["audio"]),
        text_config=Qwen2Config(tie_word_embeddings=False, **text),
        audio_token_index=spec["audio_token_index"] if audio_token_index is None else audio_token_index,
    )


def random_layout_parts(spec: dict[str, Any]):
    """(tokenizer, processor, config) of a random-weight Qwen2-Audio of layout ``spec``: a byte-level
    BPE trained locally on the prompts' words, the official chat template, the spec's mel bins and
    window, the config's special-token ids taken from that tokenizer."""
    tokenizer = train_qwen2_audio_tokenizer(_tokenizer_corpus(), vocab_size=1024)
    processor = qwen2_audio_processor(tokenizer, num_mel_bins=spec["audio"]["num_mel_bins"],
                                      chunk_length_s=spec["chunk_length_s"],
                                      chat_template=QWEN2_AUDIO_INSTRUCT_CHAT_TEMPLATE)
    config = _config_from(spec, audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
                          eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                          pad_token_id=tokenizer.pad_token_id)
    return tokenizer, processor, config


def random_layouts() -> dict[str, dict[str, Any]]:
    """The random-weights layouts by name: the 7B itself, its ~100 M CPU cut, its tiny test copy."""
    return {"7b": QWEN2_AUDIO_7B, "100m": cpu_scale_7b_spec(), "tiny": scaled_down_7b_spec()}


def build_random_model_and_processor(size: str = "7b", *, device: str | None = "auto", dtype: Any = "auto",
                                     seed: int = 0):
    """A randomly initialised model of the 7B layout (``size="7b"``) or a scaled-down copy (``"100m"``,
    ``"tiny"``; see :func:`random_layouts`),
    with a processor: a byte-level BPE tokenizer trained locally (``local_tokenizers``; the real one
    needs a download), the official chat template and a
    Whisper feature extractor with the real 30 s window. Built directly on ``device`` in ``dtype``.
    """
    # local import: resolving models and checkpoints (`rlalm models`, `rlalm infer` on an endpoint) needs no torch
    import torch
    from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

    spec = random_layouts().get(size)
    if spec is None:
        raise ValueError(f"unknown random-weights size {size!r}; expected one of {', '.join(random_layouts())}")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer, processor, config = random_layout_parts(spec)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError("tokenizer larger than the model's vocabulary")
    torch.manual_seed(seed)
    # Initialise straight on the target device in the target dtype: 8.4 B fp32 weights on the host
    # would need ~34 GB and minutes of CPU init.
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch_dtype)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, tokenizer.pad_token_id],
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.eval()
    model.rlalm_source = {"model": f"random-weights-{size}", "adapter": None}
    processor.tokenizer.padding_side = "left"
    return model, processor


def _tokenizer_corpus() -> list[str]:
    """English text for the benchmark tokenizer: the prompt templates' words and typical answers."""
    base = [
        prompts.baseline_prompt("What is the primary sound source heard in the recording?",
                                ["Dog barking", "Car horn", "Piano melody", "Human speech"]),
        prompts.idk_prompt("Which instrument plays the melody?", ["Violin", "Guitar", "Flute", "Drums"]),
        prompts.agent_type_prompt(),
        "The answer is the dog barking. This is sound: a dog barks twice in a quiet room.",
        "The speaker sounds happy and says hello; music with a slow tempo in a minor key.",
    ]
    return base * 20
