"""Training recipe of the embedded demo model (``rlalm demo train``).

The demo model learns, from the synthetic benchmark's *training* generator (never the test split),
every behaviour the notebooks exercise, in the very prompt formats used at evaluation:

- multiple-choice answers with the baseline prompt (paper Table 4);
- the IDK prompt (Table 5): the answer when the model itself currently answers the item right
  with the baseline prompt, and ``IDK`` when it answers it wrong. Which items those are is decided
  during training from the model's own prediction on that very example (the option whose first
  token it scores highest), never from a difficulty label or a recipe rule: the refusals it
  learns follow what it does not know (how well they transfer to unseen items is what the card
  measures);
- the audio type (task agent step 1), a content description (step 2), the answer given the
  content (step 3);
- a step-by-step answer for the MCoT prompt (Table 6).

Partial knowledge comes from the benchmark's difficulty (noise, subtlety), not from undertraining:
the training runs long enough for easy items to saturate. No answer prior helps: the synthetic
answers are uniform over each question type's classes and option positions.

The optimisation runs on the library's one training loop (:mod:`reliable_lalm.training.loop`:
AdamW, micro-batches, clipping, the schedule, checkpoints); this recipe supplies each step's batch
(drawn from the pool, IDK targets decided by the model in the loop), its loss (per-example
cross-entropy plus the auxiliary audio-to-answer loss), the stage-1 audio pretraining and its log.
The run is resumable: a checkpoint (model, optimizer, scheduler, RNG states, step, log) is written
every ``checkpoint_every`` steps and picked up by the same command after a crash.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from reliable_lalm.core import prompts
from reliable_lalm.core.items import SAMPLING_RATE, TASKS
from reliable_lalm.core.progress import progress_bar
from reliable_lalm.demo import model as demo_model
from reliable_lalm.demo import synthetic
from reliable_lalm.models.chat import chat_text
from reliable_lalm.models.families import FAMILIES
from reliable_lalm.training import loop
from reliable_lalm.training.sft_data import SFTExample

# The demo model is a Qwen2AudioForConditionalGeneration: its batches are collated as that family's.
DEMO_FAMILY = FAMILIES["qwen2_audio"].training_adapter()

IDK_TARGET = "IDK"


@dataclass
class DemoTrainConfig:
    seed: int = 0
    steps: int = 2000
    batch_size: int = 32
    # Each batch runs as this many micro-batches of similar length (gradients accumulated): MCoT
    # prompts are ~2x longer than the rest, and padding every row to them wastes ~20% of a step.
    micro_batches: int = 2
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pool_per_task: int = 3000  # training items generated once per modality, reused across formats
    pool_seed: int = 777  # generator seed of the training pool (the test split uses its own seed)
    # Share of each prompt format in a batch.
    mix: dict[str, float] = field(default_factory=lambda: {
        "baseline": 0.5, "idk": 0.15, "mcot": 0.07,
        "agent_type": 0.05, "agent_content": 0.13, "agent_answer": 0.10,
    })
    # Stage 1: steps of audio-encoder pretraining on audio_answer_loss alone (pretrain_audio).
    audio_pretrain_steps: int = 300
    # Weight of the training-only audio-to-answer loss (audio_answer_loss); 0 switches it off.
    audio_answer_weight: float = 1.0
    # Sizes of the model (fields of reliable_lalm.demo.model.DemoModelConfig) that differ from its defaults.
    model: dict[str, Any] = field(default_factory=lambda: {"encoder_d_model": 128, "encoder_ffn_dim": 512})
    mcot_few_shot: int = 1  # few-shot examples shown in MCoT prompts (kept short: 4 s clips, tiny model)
    checkpoint_every: int = 250
    # One thread: on 2 shared, oversubscribed cores, two OpenMP threads spin-wait and run far slower.
    threads: int = 1
    log_every: int = 50

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mcot_target(record: dict[str, Any], answer: str) -> str:
    """The step-by-step answer the demo learns for the MCoT prompt."""
    return f"This is {record['audio_type'].lower()}: {record['content']}. {record['reasoning']} So the answer is {answer}"


def few_shot_examples(pool: list[tuple[np.ndarray, dict]], n: int) -> list[prompts.FewShotExample]:
    """Fixed few-shot examples for MCoT, taken from the training pool (never the test split)."""
    out = []
    for _, record in pool[:n]:
        out.append(prompts.FewShotExample(question=record["question"], choices=tuple(record["choices"]),
                                          reasoning=mcot_target(record, record["answer"]),
                                          answer=record["answer"]))
    return out


def model_knows(model, processor, items: list[tuple[np.ndarray, dict[str, Any]]]) -> list[bool]:
    """Whether the model, as it is now, answers each item right with the baseline prompt.

    Its answer is the option whose first token gets the highest next-token logit after the prompt
    (what greedy decoding starts with); an option sharing its first token with another counts as
    wrong. One no-grad forward pass over the items.
    """
    if not items:
        return []
    tok = processor.tokenizer
    texts = [chat_text(processor, prompts.baseline_prompt(r["question"], list(r["choices"]))) for _, r in items]
    previous_side = tok.padding_side
    tok.padding_side = "right"
    try:
        batch = processor(text=texts, audio=[a for a, _ in items], sampling_rate=SAMPLING_RATE, return_tensors="pt",
                          padding=True)
    finally:
        tok.padding_side = previous_side
    with torch.no_grad():
        logits = model(**batch).logits
    last = batch["attention_mask"].sum(dim=1) - 1
    out = []
    for row, (_, record) in enumerate(items):
        first = [tok(c, add_special_tokens=False)["input_ids"][0] for c in record["choices"]]
        scores = logits[row, int(last[row]), first]
        pick = first[int(torch.argmax(scores))]
        right = first[list(record["choices"]).index(record["answer"])]
        out.append(pick == right and first.count(right) == 1)
    return out


def make_example(fmt: str, audio: np.ndarray, record: dict[str, Any], rng: np.random.Generator,
                 cfg: DemoTrainConfig, few_shot: list[prompts.FewShotExample], knows: bool = True) -> SFTExample:
    """One training example. ``knows``: whether the model currently answers the item right (see
    :func:`model_knows`); under the IDK and MCoT prompts the target is the answer if so, else a refusal."""
    question, choices, answer = record["question"], list(record["choices"]), record["answer"]
    item_id = record["id"]
    if fmt == "baseline":
        return SFTExample(audio, prompts.baseline_prompt(question, choices), answer, item_id)
    if fmt in ("idk", "mcot"):
        prompt = (prompts.idk_prompt(question, choices) if fmt == "idk"
                  else prompts.mcot_prompt(question, choices, few_shot))
        refusal = IDK_TARGET if fmt == "idk" else f"The audio is unclear. {IDK_TARGET}"
        if not knows:
            return SFTExample(audio, prompt, refusal, item_id)
        return SFTExample(audio, prompt, answer if fmt == "idk" else mcot_target(record, answer), item_id)
    if fmt == "agent_type":
        return SFTExample(audio, prompts.agent_type_prompt(), record["audio_type"], item_id)
    if fmt == "agent_content":
        return SFTExample(audio, prompts.agent_content_prompt(recipe_type_word(record)), record["content"], item_id)
    if fmt == "agent_answer":
        prompt = prompts.agent_answer_prompt(recipe_type_word(record), record["content"], question, choices)
        return SFTExample(audio, prompt, answer, item_id)
    raise ValueError(f"unknown training format {fmt!r}")


def recipe_type_word(record) -> str:
    """{Type} of the agent's steps 2-3 in the demo's training texts: lowercased, the wording the shipped
    checkpoint was trained on (the product prompts now keep the step-1 option's capital), so that
    retraining still reproduces the checkpoint byte for byte."""
    return str(record["audio_type"]).lower()


def answer_prior(records) -> dict[str, Any]:
    """Training-pool statistics for the question-text-only classifiers of :func:`reliable_lalm.demo.card.text_only_baselines`."""
    answers: dict[str, dict[str, int]] = {}
    offered: dict[str, dict[str, int]] = {}
    positions: dict[str, dict[str, int]] = {}
    for r in records:
        q, choices = r["question"], list(r["choices"])
        answers.setdefault(q, {}).setdefault(r["answer"], 0)
        answers[q][r["answer"]] += 1
        for c in choices:
            offered.setdefault(q, {}).setdefault(c, 0)
            offered[q][c] += 1
        key, pos = f"{q}|{len(choices)}", str(choices.index(r["answer"]))
        positions.setdefault(key, {}).setdefault(pos, 0)
        positions[key][pos] += 1
    return {"answers": answers, "offered": offered, "positions": positions}


def build_pool(cfg: DemoTrainConfig, *, progress: bool = True) -> list[tuple[np.ndarray, dict]]:
    """Training items from the synthetic generator, interleaved across modalities."""
    rng = np.random.default_rng(cfg.pool_seed)
    pool: list[tuple[np.ndarray, dict]] = []
    for i in progress_bar(range(cfg.pool_per_task), desc="demo training pool", enabled=progress):
        for task in TASKS:
            audio, record = synthetic.generate_item(rng, task)
            record = dict(record, id=f"demo-train-{task}-{i:05d}", split="demo-train")
            pool.append((audio, record))
    return pool


def tokenizer_corpus(pool: list[tuple[np.ndarray, dict]], few_shot: list[prompts.FewShotExample]) -> list[str]:
    """Every text the model will read or write, for training the BPE tokenizer."""
    texts = ["You are a helpful assistant.", "system", "user", "assistant", "Audio 1: ", IDK_TARGET,
             prompts.agent_type_prompt()]
    for _, record in pool:
        q, c, a = record["question"], list(record["choices"]), record["answer"]
        texts += [prompts.idk_prompt(q, c), prompts.mcot_prompt(q, c, few_shot),
                  prompts.agent_content_prompt(recipe_type_word(record)),
                  prompts.agent_answer_prompt(recipe_type_word(record), record["content"], q, c),
                  mcot_target(record, a)]
    return texts


def per_example_loss(logits, labels):
    """Cross-entropy averaged over each example's target tokens, then over the batch.

    The usual token-level mean lets long targets (content descriptions, chain-of-thought) drown the
    one- or two-token multiple-choice answers; weighting examples equally keeps the answers, which
    every notebook scores, in the gradient.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    token_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.clamp_min(0).reshape(-1), reduction="none",
    ).view_as(shift_labels) * mask
    per_example = token_loss.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    return per_example.mean()


def _length_buckets(examples: list[SFTExample], n: int) -> list[list[SFTExample]]:
    """``n`` groups of examples of similar text length (characters: a cheap proxy for tokens)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt) + len(examples[i].target))
    size = math.ceil(len(examples) / max(1, n))
    return [[examples[i] for i in order[k:k + size]] for k in range(0, len(order), size)]


def audio_answer_loss(model, audio_features, input_ids, answers: list[tuple[list[int], int] | None]):
    """Training-only auxiliary loss, no extra parameters: the mean of an example's projected audio
    features (what replaces its ``<|AUDIO|>`` tokens) should point, among the (tied) embeddings of
    its options' first tokens, to the answer's (cosine similarity x 10, cross-entropy).

    It gives the audio encoder a direct gradient from the first step, where the language-model loss
    reaches it only through attention that does not yet look at the audio; the shipped model is
    the plain Qwen2-Audio class, this loss is not part of it. Summed over the examples with an
    entry in ``answers``, divided by the number of examples.
    """
    audio_token = model.config.audio_token_id
    embeddings = model.get_input_embeddings().weight
    total = audio_features.new_zeros(())
    for row, entry in enumerate(answers):
        if entry is None:
            continue
        tokens, answer = entry
        n = int((input_ids[row] == audio_token).sum())
        pooled = audio_features[row, :n].mean(dim=0)
        sims = 10 * torch.nn.functional.cosine_similarity(pooled[None, :], embeddings[tokens], dim=-1)
        total = total + torch.nn.functional.cross_entropy(sims[None, :], torch.tensor([answer]))
    return total / max(1, len(answers))


def pretrain_audio(model, processor, pool: list[tuple[np.ndarray, dict]], answers: dict[str, tuple[list[int], int]],
                   cfg: "DemoTrainConfig") -> list[dict[str, Any]]:
    """Stage 1: the audio encoder and projector alone learn :func:`audio_answer_loss` (the decoder
    is not run, so a step is cheap). Returns its log."""
    params = list(model.model.audio_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tower = model.model.audio_tower
    log, running = [], None
    for step in range(cfg.audio_pretrain_steps):
        rng = np.random.default_rng([cfg.seed, 2**20, step])
        picks = rng.integers(0, len(pool), size=cfg.batch_size)
        feats = processor.feature_extractor([pool[i][0] for i in picks], sampling_rate=SAMPLING_RATE,
                                            return_attention_mask=True, return_tensors="pt")
        features = feats["input_features"]
        # The encoder's padding mask, built as Qwen2AudioForConditionalGeneration.forward builds it.
        feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(feats["attention_mask"].sum(-1))
        max_len = (features.shape[-1] - 2) // 2 + 1
        mask_2d = (torch.arange(max_len)[None, :] < feat_lengths[:, None]).long()
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(len(picks), max_len, 1),
                                         attention_mask=mask_2d)
        projected = model.model.multi_modal_projector(tower(features, attention_mask=mask).last_hidden_state)
        embeddings = model.get_input_embeddings().weight.detach()
        loss = projected.new_zeros(())
        for row, i in enumerate(picks):
            tokens, answer = answers[pool[i][1]["id"]]
            pooled = projected[row, : int(out_lengths[row])].mean(dim=0)
            sims = 10 * torch.nn.functional.cosine_similarity(pooled[None, :], embeddings[tokens], dim=-1)
            loss = loss + torch.nn.functional.cross_entropy(sims[None, :], torch.tensor([answer]))
        loss = loss / len(picks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if (step + 1) % cfg.log_every == 0:
            log.append({"step": step + 1, "loss": running})
    model.zero_grad(set_to_none=True)
    return log


class DemoLoss:
    """The recipe's loss of one micro-batch: :func:`per_example_loss`, plus ``answer_weight`` times
    :func:`audio_answer_loss` on the rows whose ``answers`` entry is given (``answers=None``: off)."""

    def __init__(self, model, answer_weight: float = 0.0):
        self.model = model
        self.answer_weight = answer_weight

    def __call__(self, labels, answers=None, **inputs):
        captured: dict[str, Any] = {}
        hook = None
        if answers is not None:
            hook = self.model.model.multi_modal_projector.register_forward_hook(
                lambda module, args, output: captured.__setitem__("audio", output))
        try:
            logits = self.model(**inputs).logits
        finally:
            if hook is not None:
                hook.remove()
        loss = per_example_loss(logits, labels)
        if "audio" in captured:
            loss = loss + self.answer_weight * audio_answer_loss(self.model, captured["audio"], inputs["input_ids"],
                                                                 answers)
        return loss


def micro_batches(processor, examples: list[SFTExample], n: int,
                  answers: dict[str, tuple[list[int], int]] | None = None,
                  answer_weight: float = 0.0) -> list[loop.MicroBatch]:
    """The batch as ``n`` length-grouped micro-batches, each weighted by its share of the examples
    (the step's loss is the mean over all its examples). With ``answers`` (item id -> option first
    tokens, answer index) and a positive ``answer_weight``, each carries its rows' entries for
    :func:`audio_answer_loss`."""
    out = []
    for chunk in _length_buckets(examples, n):
        inputs = DEMO_FAMILY.collate(processor, chunk)
        if answers and answer_weight:
            inputs["answers"] = [answers.get(ex.item_id) for ex in chunk]
        out.append(loop.MicroBatch(inputs, share=len(chunk) / len(examples)))
    return out


def _lr_at(step: int, cfg: DemoTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def lr_schedule(optimizer, cfg: DemoTrainConfig):
    """:func:`_lr_at` as a ``torch.optim`` scheduler: linear warm-up to ``lr`` (``(step + 1) / warmup``),
    then a cosine to ``min_lr_ratio * lr``. Not ``transformers.get_scheduler``'s ``cosine_with_min_lr``:
    its warm-up ramps ``step / warmup`` (0 at the first step), other weights than the shipped model's."""
    class DemoSchedule(LRScheduler):
        def get_lr(self):
            return [_lr_at(self.last_epoch, cfg) for _ in self.optimizer.param_groups]

    return DemoSchedule(optimizer)


def train_demo(out_dir: str | Path, cfg: DemoTrainConfig | None = None, *, work_dir: str | Path | None = None,
               progress: bool = True) -> Path:
    """Build the tokenizer and model, train them, and save the checkpoint to ``out_dir``.

    ``work_dir`` keeps resumable checkpoints (default: ``out_dir/../<name>-work``).
    """
    cfg = cfg or DemoTrainConfig()
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.parent / f"{out_dir.name}-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    pool = build_pool(cfg, progress=progress)
    few_shot = few_shot_examples(pool, cfg.mcot_few_shot)
    init_dir = work_dir / "init"
    if not (init_dir / "config.json").exists():
        demo_model.create_untrained(init_dir, tokenizer_corpus(pool, few_shot),
                                    demo_model.DemoModelConfig(**cfg.model), seed=cfg.seed)
    processor = AutoProcessor.from_pretrained(init_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(init_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    optimization = loop.TorchOptimization(DemoLoss(model, cfg.audio_answer_weight), model.parameters(), optimizer,
                                          lr_schedule(optimizer, cfg), max_grad_norm=cfg.grad_clip,
                                          weights_of=model, keep_checkpoints=1)
    training = loop.TrainingLoop(optimization, total_steps=cfg.steps, checkpoint_dir=work_dir / "checkpoints",
                                 save_every=cfg.checkpoint_every, checkpoint_at_end=True, identity=cfg.to_json(),
                                 show_progress=progress, desc="demo training",
                                 other_run_hint=f"it was written with another training config; delete {work_dir} "
                                                "to restart")
    resumed = training.resume()  # weights_only: a planted checkpoint cannot run code
    tok = processor.tokenizer
    answers = {r["id"]: ([tok(c, add_special_tokens=False)["input_ids"][0] for c in r["choices"]],
                         list(r["choices"]).index(r["answer"])) for _, r in pool}
    model.train()
    # The logged loss is an EMA, resumed with the rest; stage 1 is deterministic: after a crash
    # inside it, it reruns.
    log: list[dict[str, Any]] = list(resumed["log"]) if resumed is not None else []
    running = resumed["running_loss"] if resumed is not None else None
    pretrain_log = resumed["pretrain_log"] if resumed is not None else pretrain_audio(model, processor, pool, answers,
                                                                                       cfg)
    formats = list(cfg.mix)
    weights = np.array([cfg.mix[f] for f in formats], dtype=float)
    weights /= weights.sum()
    started = time.time()
    counts = {"asked": 0, "refused": 0}

    def step_batches(step: int) -> list[loop.MicroBatch]:
        # Per-step RNG from (seed, step): a resumed run draws exactly the batches it would have drawn.
        rng = np.random.default_rng([cfg.seed, step])
        picks = rng.integers(0, len(pool), size=cfg.batch_size)
        fmts = rng.choice(len(formats), size=cfg.batch_size, p=weights)
        asks = [j for j, f in enumerate(fmts) if formats[f] in ("idk", "mcot")]
        knows = dict(zip(asks, model_knows(model, processor, [pool[picks[j]] for j in asks])))
        examples = [make_example(formats[f], *pool[i], rng, cfg, few_shot, knows=knows.get(j, True))
                    for j, (i, f) in enumerate(zip(picks, fmts))]
        counts["asked"] += len(asks)
        counts["refused"] += sum(not k for k in knows.values())
        return micro_batches(processor, examples, cfg.micro_batches, answers, cfg.audio_answer_weight)

    def record(done: int, value: float) -> None:
        nonlocal running
        running = value if running is None else 0.98 * running + 0.02 * value
        if done % cfg.log_every == 0:
            # idk_target_share: of the IDK/MCoT examples since the last entry, those the model got wrong.
            log.append({"step": done, "loss": running, "lr": _lr_at(done - 1, cfg), "elapsed_s": time.time() - started,
                        "idk_target_share": counts["refused"] / max(1, counts["asked"])})
            counts["asked"] = counts["refused"] = 0

    training.run(step_batches, record=record,
                 recipe_state=lambda: {"log": log, "pretrain_log": pretrain_log, "running_loss": running})
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "demo_config.json").write_text((init_dir / "demo_config.json").read_text())
    shares = [r["idk_target_share"] for r in log if "idk_target_share" in r]
    tenth = max(1, len(shares) // 10)
    (out_dir / "training.json").write_text(json.dumps({
        "config": cfg.to_json(), "log": log, "pretrain_log": pretrain_log, "generator_version": synthetic.GENERATOR_VERSION,
        "model_config": json.loads((init_dir / "demo_config.json").read_text()),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        # Share of IDK targets among IDK/MCoT examples over the first and the last tenth of training.
        "idk_target_share_first": float(np.mean(shares[:tenth])) if shares else None,
        "idk_target_share_last": float(np.mean(shares[-tenth:])) if shares else None,
        "few_shot": [asdict(ex) for ex in few_shot],
        "answer_prior": answer_prior(record for _, record in pool),
    }, indent=2) + "\n")
    return out_dir
