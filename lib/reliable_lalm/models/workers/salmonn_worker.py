"""Worker for SALMONN (Tang et al., 2024), the paper's Table 3 row "SALMONN".

Written against the published code of the user's checkout of bytedance/SALMONN (the v1 release:
``model.py``'s ``SALMONN(ckpt, whisper_path, beats_path, vicuna_path, low_resource)`` and its
``generate(wav_path, prompt, prompt_pattern, device, max_length, num_beams, do_sample, top_p, ...)``,
as ``cli_inference.py`` calls it), not run in this repository (no code or weights here). It runs in
its own environment (``requirements-salmonn.txt``: the repository's pins, transformers 4.28).

How it answers one request: the clip's path and our prompt go to ``model.generate``, whose
default prompt pattern is SALMONN's format::

    USER: <Speech><SpeechHere></Speech> {prompt}\\nASSISTANT:

(``<SpeechHere>`` is replaced by the Q-Former's audio embeddings; the model reads the WAV itself,
keeps the first channel, truncates to 30 s and resamples to 16 kHz). Decoding comes from the
request: greedy is ``do_sample=False`` with ``RLALM_SALMONN_NUM_BEAMS`` beams (default 1; the
repository's demo uses 4 with sampling); sampling passes temperature and top_p (SALMONN's
``generate`` has no top_k: a request with top_k > 0 fails). ``max_length`` is ``max_new_tokens``
(with ``inputs_embeds`` only, transformers 4.28 counts generated tokens only). Each sample is seeded
with ``torch.manual_seed`` of its row seed; on CUDA it runs under fp16 autocast as ``cli_inference.py``.

Environment:

    RLALM_SALMONN_REPO          checkout of bytedance/SALMONN (the folder with model.py); required
    RLALM_SALMONN_CKPT          salmonn_v1.pth (or salmonn_7b_v0.pth with a Vicuna-7B); required
    RLALM_SALMONN_WHISPER       whisper-large-v2 folder; required
    RLALM_SALMONN_BEATS         BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt; required
    RLALM_SALMONN_VICUNA        vicuna-13b-v1.1 folder; required
    RLALM_SALMONN_DEVICE        default cuda:0
    RLALM_SALMONN_LOW_RESOURCE  1: load Vicuna in 8 bit (the repository's --low_resource)
    RLALM_SALMONN_NUM_BEAMS     beams for greedy decoding (default 1)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jsonl_worker  # noqa: E402

WINDOW_SECONDS = 30.0  # SALMONN's generate truncates to 30 s itself


def main():
    repo = jsonl_worker.env("RLALM_SALMONN_REPO", required=True)
    paths = {name: jsonl_worker.env("RLALM_SALMONN_" + name.upper(), required=True)
             for name in ("ckpt", "whisper", "beats", "vicuna")}
    device = jsonl_worker.env("RLALM_SALMONN_DEVICE", "cuda:0")
    low_resource = jsonl_worker.env("RLALM_SALMONN_LOW_RESOURCE", "0") == "1"
    num_beams = int(jsonl_worker.env("RLALM_SALMONN_NUM_BEAMS", "1"))
    if not os.path.isfile(os.path.join(repo, "model.py")):
        jsonl_worker.fail_startup("%s has no model.py: RLALM_SALMONN_REPO must be a checkout of the SALMONN "
                                  "v1 code (bytedance/SALMONN, the release with cli_inference.py --ckpt_path)" % repo)
    sys.path.insert(0, os.path.abspath(repo))
    try:
        # local import: SALMONN's model.py is importable only after its checkout is put on sys.path above
        import torch
        from model import SALMONN

        model = SALMONN(ckpt=paths["ckpt"], whisper_path=paths["whisper"], beats_path=paths["beats"],
                        vicuna_path=paths["vicuna"], low_resource=low_resource)
        model.to(device)
        model.eval()
    except Exception as err:
        jsonl_worker.fail_startup("cannot build SALMONN from %s: %s: %s" % (repo, type(err).__name__, err))
    use_autocast = device.startswith("cuda")

    def generate(request):
        settings = request["settings"]
        if int(settings["top_k"]) > 0:
            raise ValueError("SALMONN's generate has no top_k; use top_p")
        greedy = not settings["do_sample"] or settings["temperature"] == 0
        decoding = {"device": device, "max_length": int(settings["max_new_tokens"]), "min_length": 1}
        if greedy:
            decoding.update(do_sample=False, num_beams=num_beams)
        else:
            decoding.update(do_sample=True, num_beams=1, temperature=float(settings["temperature"]),
                            top_p=float(settings["top_p"]))
        path = jsonl_worker.audio_path(request)
        texts = []
        for seed in request["seeds"]:
            if greedy and texts:
                texts.append(texts[0])
                continue
            torch.manual_seed(seed)
            with torch.no_grad():
                if use_autocast:
                    with torch.cuda.amp.autocast(dtype=torch.float16):
                        out = model.generate(path, prompt=request["prompt"], **decoding)
                else:
                    out = model.generate(path, prompt=request["prompt"], **decoding)
            texts.append(out[0])
        return {"texts": texts}

    jsonl_worker.serve({"name": "SALMONN", "ckpt": os.path.basename(paths["ckpt"]),
                        "vicuna": os.path.abspath(paths["vicuna"]), "num_beams_greedy": num_beams,
                        "low_resource": low_resource,
                        "prompt_pattern": "USER: <Speech><SpeechHere></Speech> {}\\nASSISTANT:"},
                       generate, window_seconds=WINDOW_SECONDS)


if __name__ == "__main__":
    main()
