"""A local LLM judge through transformers: ``--normalizer hf:<model>``, the offline alternative to
GPT-4o-mini.

Any instruction-tuned causal LM that transformers can load (a hub id already in the HF cache, or a
folder) judges the outputs the rules cannot map (``mode="fallback"``) or every output
(``mode="all"``), with the toolkit's judge prompt (default) or the paper's Table 8 prompt, through
its chat template. Generation is greedy and batched with left padding (batched output equals batch
size 1); identical prompts are asked once. Replies are parsed by
:func:`reliable_lalm.methods.llm_judge.parse_reply`. The result has the same per-item details as
the OpenAI judge (``last_details``: reply, rules' decision), so ``rlalm score --log-samples`` and the
disagreement counts work alike. Loaded by reference from
:func:`reliable_lalm.methods.llm_judge.build_normalizer`, so ``rlalm score`` with another
normalizer never imports torch.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from reliable_lalm.core.normalize import RuleBasedNormalizer
from reliable_lalm.core.normalize_types import LLMConfigError, Normalized, Normalizer
from reliable_lalm.core.prompts import JUDGE_PROMPT_BUILDERS
from reliable_lalm.methods.llm_judge import MODES, PROMPT_NAMES, RulesThenJudge, judge_detail, parse_reply


class HFJudgeNormalizer(RulesThenJudge):
    """Normalize outputs with a local transformers chat model as the judge."""

    name = "hf"

    def __init__(self, model: str, *, mode: str = "fallback", prompt: str = "toolkit", batch_size: int = 8,
                 max_new_tokens: int = 24, device: str = "auto", progress: bool = True,
                 rule_normalizer: Normalizer | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if prompt not in JUDGE_PROMPT_BUILDERS:
            raise ValueError(f"prompt must be one of {tuple(JUDGE_PROMPT_BUILDERS)}, not {prompt!r}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        self.model_id = str(model)
        self.mode, self.prompt = mode, prompt
        self.batch_size, self.max_new_tokens = int(batch_size), int(max_new_tokens)
        self.progress = progress
        self.rule = rule_normalizer or RuleBasedNormalizer()
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if device == "auto" else device))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_id).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise LLMConfigError(f"hf:{self.model_id}: cannot load the judge model ({' '.join(str(err).split())[:300]})"
                                 ) from None
        self.tokenizer.padding_side = "left"  # batched greedy equals batch size 1
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._stats = {"llm_items": 0, "calls": 0, "unparsed": 0}
        self.last_details: list[dict[str, Any] | None] = []

    def __repr__(self) -> str:
        return f"HFJudgeNormalizer(model={self.model_id!r}, mode={self.mode!r}, prompt={self.prompt!r})"

    def params(self) -> dict[str, Any]:
        return {"normalizer": self.name, "model": self.model_id, "mode": self.mode, "decoding": "greedy",
                "max_new_tokens": self.max_new_tokens, "prompt": PROMPT_NAMES[self.prompt]}

    def describe(self) -> str:
        which = "every output" if self.mode == "all" else "outputs the rules cannot map"
        prompt = "Table 8 prompt" if self.prompt == "paper" else "toolkit judge prompt"
        return f"Answers normalized by the local model {self.model_id} ({which}; {prompt}; greedy)."

    def summary(self) -> dict[str, Any]:
        return {**self._stats, "model": self.model_id, "mode": self.mode, "prompt": self.prompt, "fatal_error": None}

    def normalize_many(self, outputs: Sequence[str], choices: Sequence[Sequence[str]]) -> list[Normalized]:
        rule, prompts = self.rules_and_prompts(outputs, choices)
        distinct = list(dict.fromkeys(prompts.values()))  # identical prompts are asked once
        replies = dict(zip(distinct, self.generate(distinct)))
        results, details = list(rule), [None] * len(outputs)
        for i, text in prompts.items():
            reply = replies[text]
            results[i] = parse_reply(reply, choices[i], letters=self.prompt == "toolkit")
            self._stats["unparsed"] += results[i].method == "llm-unparsed"
            details[i] = judge_detail(rule[i], reply)
        self._stats["llm_items"] += len(prompts)
        self.last_details = details
        return results

    def _chat_text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy replies to ``prompts``, ``batch_size`` at a time (left-padded)."""
        replies: list[str] = []
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc=f"judge ({self.model_id})", unit="batch", disable=not self.progress or not prompts,
                          leave=False):
            batch = [self._chat_text(p) for p in prompts[start:start + self.batch_size]]
            encoded = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            generated = self.model.generate(**encoded, do_sample=False, max_new_tokens=self.max_new_tokens,
                                            pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = generated[:, encoded["input_ids"].shape[1]:]
            replies += [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
            self._stats["calls"] += 1
        return replies
