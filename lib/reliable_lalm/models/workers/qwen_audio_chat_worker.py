"""Worker for Qwen-Audio-Chat (Chu et al., 2023), the paper's Table 3 row "Qwen-Audio-Chat".

Written against the published code (QwenLM/Qwen-Audio README and the model's remote code,
``modeling_qwen.py`` / ``tokenization_qwen.py``), not run in this repository (no weights here).
It runs in its own environment (``requirements-qwen-audio-chat.txt``: transformers 4.32, the
version the model was released with; its remote code does not load with our transformers 5.x)
and loads the model's remote code from the user's local model folder (``trust_remote_code``).

How it answers one request (the model's own chat API and audio tag format)::

    query = tokenizer.from_list_format([{"audio": wav_path}, {"text": prompt}])
    # -> "Audio 1:<audio>wav_path</audio>\\n" + prompt
    response, _ = model.chat(tokenizer, query=query, history=None, **decoding)

``decoding`` comes from the request: greedy (``do_sample=False``) or sampling with its
temperature/top_p/top_k; ``max_new_tokens``; each sample seeded with ``torch.manual_seed`` of its
row seed. The system prompt is the chat API's default ("You are a helpful assistant."). The model's
audio loader runs ``ffmpeg`` on the path, so ``ffmpeg`` must be on PATH. ``model.chat`` does not
return token counts: ``new_tokens`` is reported as unknown.

Environment:

    RLALM_QWEN_AUDIO_CHAT_DIR     local folder of Qwen/Qwen-Audio-Chat (weights + remote code); required
    RLALM_QWEN_AUDIO_CHAT_DEVICE  device_map for from_pretrained (default "cuda"; "cpu" works, slowly)
    RLALM_QWEN_AUDIO_CHAT_DTYPE   bf16 | fp16 | fp32 (default bf16; the remote code's own flags)

Set up (once)::

    python3 -m venv ~/venvs/qwen-audio-chat
    ~/venvs/qwen-audio-chat/bin/pip install -r requirements-qwen-audio-chat.txt
    rlalm infer --model "worker:$HOME/venvs/qwen-audio-chat/bin/python $(python -c 'from reliable_lalm.models.worker import worker_script; print(worker_script("qwen_audio_chat_worker"))')" ...
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jsonl_worker  # noqa: E402

WINDOW_SECONDS = 30.0  # "Qwen-Audio models currently perform best with audio clips under 30 seconds"


def main():
    model_dir = jsonl_worker.env("RLALM_QWEN_AUDIO_CHAT_DIR", required=True)
    device = jsonl_worker.env("RLALM_QWEN_AUDIO_CHAT_DEVICE", "cuda")
    dtype = jsonl_worker.env("RLALM_QWEN_AUDIO_CHAT_DTYPE", "bf16")
    if dtype not in ("bf16", "fp16", "fp32"):
        jsonl_worker.fail_startup("RLALM_QWEN_AUDIO_CHAT_DTYPE must be bf16, fp16 or fp32, not %r" % dtype)
    try:
        # local import: this script runs in the model's own environment; a missing library is reported as a startup failure
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.generation import GenerationConfig

        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device, trust_remote_code=True,
                                                     **{dtype: True}).eval()
        # transformers 4.32 does not pick up the chat generation config by itself (the README's note).
        model.generation_config = GenerationConfig.from_pretrained(model_dir, trust_remote_code=True)
    except Exception as err:
        jsonl_worker.fail_startup("cannot load Qwen-Audio-Chat from %s: %s: %s" % (model_dir, type(err).__name__, err))

    def generate(request):
        settings = request["settings"]
        path = jsonl_worker.audio_path(request)
        query = tokenizer.from_list_format([{"audio": path}, {"text": request["prompt"]}])
        greedy = not settings["do_sample"] or settings["temperature"] == 0
        decoding = {"max_new_tokens": int(settings["max_new_tokens"])}
        if greedy:
            decoding["do_sample"] = False
        else:
            decoding.update(do_sample=True, temperature=float(settings["temperature"]),
                            top_p=float(settings["top_p"]), top_k=int(settings["top_k"]))
        texts = []
        for seed in request["seeds"]:
            if greedy and texts:  # one deterministic answer serves every sample index
                texts.append(texts[0])
                continue
            torch.manual_seed(seed)
            with torch.no_grad():
                response, _ = model.chat(tokenizer, query=query, history=None, **decoding)
            texts.append(response)
        return {"texts": texts}

    jsonl_worker.serve({"name": "Qwen-Audio-Chat", "folder": os.path.abspath(model_dir), "dtype": dtype,
                        "transformers": transformers.__version__, "api": "model.chat(from_list_format)"},
                       generate, window_seconds=WINDOW_SECONDS)


if __name__ == "__main__":
    main()
