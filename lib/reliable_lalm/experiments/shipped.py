"""LoRA adapters shipped inside the package, found by what they were trained from.

Why: evaluation of a given adapter is bitwise portable across CPUs, LoRA SFT is not (issue 16:
an AMD EPYC and an Intel Xeon diverge from SFT step 1 and end with 5-23 of 600 evaluation
outputs changed). So the demo's adapters are trained once, shipped in
``lib/reliable_lalm/assets/demo_adapters/<name>/`` (peft files + ``training_summary.json``) with
a ``manifest.json``, and :meth:`reliable_lalm.experiments.crossmodal.CrossModal.adapter`
evaluates the shipped adapter whenever its *training key* matches, instead of retraining.

The training key is a content hash of everything the weights depend on and nothing
machine-specific: the base model's file contents (sha256), the SFT examples' item ids, prompts and
targets (the targets are where the K@N samples enter), the SFT hyper-parameters (seed included)
and the DeepSpeed config. Paths and file times are left out, so a fresh clone finds the same key.
A retrained demo model, other K@N samples or other hyper-parameters give another key, and the
adapter is trained as before. ``rlalm retrain`` trains on purpose and checks the result statistically.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from reliable_lalm import paths
from reliable_lalm.core.fingerprint import file_sha256, model_fingerprint

SHIPPED_DIR = paths.ASSETS_DIR / "demo_adapters"
MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "training_summary.json")


def sha256_file(path: Path) -> str:
    return file_sha256(path)


def model_content_digest(model: str | Path) -> str | None:
    """The base model by content (:func:`reliable_lalm.core.fingerprint.model_fingerprint`); ``None``
    for a model that is not a local folder or a cached hub snapshot."""
    value = model_fingerprint(model)
    return None if value is None or value.startswith("name:") else value


def examples_digest(examples: Iterable[Any]) -> str:
    """sha256 of the SFT examples' (item id, prompt, target), in order."""
    blob = json.dumps([[ex.item_id, ex.prompt, ex.target] for ex in examples], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def training_key(*, model_digest: str, examples: Iterable[Any], sft: Mapping[str, Any],
                 train_prompt: str, deepspeed: Mapping[str, Any] | None) -> str:
    """The portable content key of one adapter training (see the module docstring)."""
    payload = {"base_model_sha256": model_digest, "examples_sha256": examples_digest(examples),
               "sft": dict(sft), "train_prompt": train_prompt, "deepspeed": deepspeed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def read_manifest(directory: Path = SHIPPED_DIR) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {"adapters": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def find_shipped(key: str, directory: Path = SHIPPED_DIR) -> Path | None:
    """The shipped adapter folder trained under ``key``, its files checked against the manifest's
    sha256 (a modified file is never used: ``None``, and the caller trains)."""
    manifest = read_manifest(directory)
    for name, entry in manifest.get("adapters", {}).items():
        if entry.get("training_key") != key:
            continue
        folder = Path(directory) / name
        files = entry.get("files", {})
        if files and all((folder / f).is_file() and sha256_file(folder / f) == digest for f, digest in files.items()):
            return folder
    return None


def ship_adapter(source: Path, name: str, *, key: str, info: Mapping[str, Any],
                 directory: Path = SHIPPED_DIR, base_model: str = paths.DEMO_MODEL_NAME) -> Path:
    """Copy a trained adapter into the package and record it in the manifest (``tools/ship_adapters.py``).

    PEFT records the base model's path on the training machine in ``adapter_config.json``; the
    shipped copy names it by its registry name instead (the base is always passed explicitly)."""
    directory = Path(directory)
    target = directory / name
    target.mkdir(parents=True, exist_ok=True)
    for f in ADAPTER_FILES:
        shutil.copyfile(Path(source) / f, target / f)
    config_path = target / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    manifest = read_manifest(directory)
    manifest.setdefault("adapters", {})[name] = {
        "training_key": key, **dict(info), "files": {f: sha256_file(target / f) for f in ADAPTER_FILES}}
    manifest["note"] = ("LoRA adapters of the demo profile, evaluated by `make reproduce` instead of retraining "
                        "(SFT is not bitwise portable across CPUs, evaluation is). Written by tools/ship_adapters.py.")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
