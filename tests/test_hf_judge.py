"""The local transformers judge (``--normalizer hf:<model>``) end to end, with a tiny random chat model
built offline (a byte-level BPE trained here, random Qwen2 weights): batched greedy equals batch size
1, reruns are identical, every judged output gets a parsed decision and its reply in the log."""
from __future__ import annotations

import json

import pytest

from reliable_lalm.cli import main
from reliable_lalm.core.judge_eval import load_judge_set
from reliable_lalm.methods.llm_judge import LLMConfigError, build_normalizer
from reliable_lalm.core.prompts import build_toolkit_judge_prompt

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reliable_lalm.models.local_tokenizers import train_qwen2_audio_tokenizer

    folder = tmp_path_factory.mktemp("tiny-judge")
    corpus = [c.output for c in load_judge_set()] + [" ".join(c.choices) for c in load_judge_set()]
    corpus += [build_toolkit_judge_prompt("Dog barking", ["Dog barking", "Cat meowing"]), "IDK INVALID"]
    tokenizer = train_qwen2_audio_tokenizer(corpus, vocab_size=600)
    tokenizer.chat_template = CHATML
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_batched_greedy_equals_batch_size_one_and_reruns(tiny_chat_model):
    cases = load_judge_set(split="eval")[:12]
    outputs, choices = [c.output for c in cases], [list(c.choices) for c in cases]
    batched = build_normalizer(f"hf:{tiny_chat_model}", mode="all", batch_size=5, progress=False)
    one = build_normalizer(f"hf:{tiny_chat_model}", mode="all", batch_size=1, progress=False)
    first = batched.normalize_many(outputs, choices)
    replies = [d["reply"] for d in batched.last_details]
    assert one.normalize_many(outputs, choices) == first
    assert [d["reply"] for d in one.last_details] == replies
    assert batched.normalize_many(outputs, choices) == first  # deterministic
    assert all(d is not None and isinstance(d["reply"], str) and "rule_decision" in d for d in batched.last_details)
    assert all(r.method in ("llm", "llm-unparsed") for r in first)
    assert batched.summary()["llm_items"] == 24


def test_judge_eval_and_score_with_the_local_judge(tiny_chat_model, tmp_path):
    report = tmp_path / "hf.json"
    assert main(["judge-eval", "--normalizer", f"hf:{tiny_chat_model}", "--split", "eval", "--format", "json",
                 "--output", str(report)]) == 0
    result = json.loads(report.read_text(encoding="utf-8"))["eval"]
    assert result["normalizer"] == "hf" and result["n"] == len(load_judge_set(split="eval"))
    # fallback mode: the random judge only sees what the rules call invalid, so no harm is added
    assert result["n_harmful"] == 0
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "q1", "task": "sound", "choices": ["Dog barking", "Cat meowing"],
                                "answer": "Dog barking", "model_output": "woof?"}) + "\n")
    log = tmp_path / "log.jsonl"
    assert main(["score", str(pred), "--normalizer", f"hf:{tiny_chat_model}", "--log-samples", str(log),
                 "--output", str(tmp_path / "s.json")]) == 0
    [row] = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert "llm_reply" in row and row["rule_decision"] == "invalid"


def test_missing_local_judge_is_one_line(tmp_path):
    with pytest.raises(LLMConfigError, match="hf:.*cannot load"):
        build_normalizer(f"hf:{tmp_path / 'nowhere'}")
    assert main(["judge-eval", "--normalizer", f"hf:{tmp_path / 'nowhere'}"]) == 2
