"""Worker serving the embedded demo model (or any Qwen2-Audio checkpoint) through Qwen2AudioBackend.

It exists to test the worker protocol end to end in a separate process: its answers must equal
the in-process :class:`reliable_lalm.models.qwen2_audio.Qwen2AudioBackend`'s. It runs in this project's
environment and is configured by environment variables only:

    RLALM_WORKER_MODEL        checkpoint folder (default: the shipped demo model)
    RLALM_WORKER_DEVICE       cpu | cuda | auto (default cpu)
    RLALM_WORKER_DTYPE        auto | float32 | bfloat16 (default auto)
    RLALM_WORKER_THREADS      torch CPU threads (default 1)
    RLALM_WORKER_FAIL_ITEMS   comma-separated item ids answered with an error line (fault
                              injection, for tests of the protocol's error path)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jsonl_worker  # noqa: E402


def main() -> None:
    # local import: the worker protocol's startup (jsonl_worker) is importable before the model's libraries load
    import soundfile as sf
    import torch

    from reliable_lalm import paths
    from reliable_lalm.models.base import GenerationRequest, GenerationSettings
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    torch.set_num_threads(int(jsonl_worker.env("RLALM_WORKER_THREADS", "1")))
    model_dir = jsonl_worker.env("RLALM_WORKER_MODEL", str(paths.DEMO_MODEL_DIR))
    fail_items = set(filter(None, jsonl_worker.env("RLALM_WORKER_FAIL_ITEMS", "").split(",")))
    try:
        backend = Qwen2AudioBackend.from_pretrained(model_dir, batch_size=1, device=jsonl_worker.env("RLALM_WORKER_DEVICE", "cpu"),
                                            dtype=jsonl_worker.env("RLALM_WORKER_DTYPE", "auto"))
    except Exception as err:  # a wrong folder: say so through the protocol
        jsonl_worker.fail_startup(f"cannot load {model_dir}: {type(err).__name__}: {err}")

    def generate(request):
        if request["item_id"] in fail_items:
            raise RuntimeError(f"injected failure for {request['item_id']}")
        audio, sr = sf.read(jsonl_worker.audio_path(request), dtype="float32")
        if sr != backend.sampling_rate or audio.ndim != 1:
            raise ValueError(f"expected mono {backend.sampling_rate} Hz audio, got {sr} Hz shape {audio.shape}")
        settings = GenerationSettings(**request["settings"])
        g = backend.generate([GenerationRequest(request["item_id"], audio, request["prompt"], settings,
                                                sample_indices=tuple(request["sample_indices"]))])[0]
        return {"texts": g.texts, "new_tokens": [int(k) for k in g.new_tokens], "finished": g.finished,
                "prompt_tokens": g.prompt_tokens}

    jsonl_worker.serve({**backend.describe(), "worker": "demo_worker"}, generate,
                       window_seconds=backend.window_seconds, sampling_rate=backend.sampling_rate)


if __name__ == "__main__":
    main()
