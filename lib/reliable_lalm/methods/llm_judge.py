"""LLM answer normalization through any OpenAI-compatible chat-completions API (paper Appendix C.2).

The paper maps each free-form model output onto one of the choices (or ``IDK``) by sending the
Table 8 prompt to gpt-4o-mini. :class:`OpenAINormalizer` does that with the official ``openai``
client against the OpenAI API or any compatible server (vLLM, llama.cpp, ...), and is built to be
re-run cheaply and safely:

* ``mode="fallback"`` (default) asks the LLM only about outputs the rule-based normalizer cannot
  map; ``mode="all"`` asks about every output (the paper's setting).
* Replies are cached on disk, one JSON file per sha256(endpoint, model, prompt), written
  atomically, so a rerun makes no request. The endpoint (base URL, credentials stripped) is part
  of the key: a reply from one server never answers for another. Only replies that parse to a
  choice, ``IDK`` or ``INVALID`` are cached (an unparseable one, or a failure, is asked again next run, and an
  unparseable entry left by an older version is not trusted); ``refresh_cache=True`` (``rlalm score
  --refresh-cache``) asks again whatever the cache holds, and rewrites it.
* At most ``max_concurrency`` requests are in flight. 429, 408/409, 5xx, timeouts and connection
  errors are retried by the openai client itself (``max_retries``, exponential backoff with
  jitter, ``Retry-After`` honoured); malformed 200 bodies, which the client takes for success, are
  asked again here (up to ``max_retries`` times); after that the item keeps its rule-based result
  with method ``"llm-failed"`` and the run goes on
  (``last_details`` says which items and why). 401/403/404 and an exhausted quota are *fatal*
  (``summary()["fatal_error"]``): nothing more is sent, and ``rlalm score`` exits non-zero rather
  than print rule-based numbers under the LLM's name.
* Two prompts (``prompt=``): ``"paper"``, Table 8 verbatim (the paper profile, ``kind="all"``), and
  ``"toolkit"``, the default otherwise: the judging policy of docs/judging.md spelled out, lettered
  options, a reply constrained to an option text, ``IDK`` or ``INVALID``.
* Replies are parsed tolerantly but never guessed at (:func:`parse_reply`): "B. Dog barking",
  "'Dog barking.'", "Answer: IDK" are understood; a reply naming several choices, or a letter that
  contradicts its text, is ``invalid`` with method ``"llm-unparsed"``.
* The API key is read only from ``OPENAI_API_KEY``; it is never an argument, and it is scrubbed
  from every error text this module logs or keeps. Cache files and summaries never contain it.

Environment: ``OPENAI_API_KEY`` (the key), ``OPENAI_BASE_URL`` (an OpenAI-compatible endpoint,
e.g. ``http://localhost:8000/v1``; overridden by the ``base_url`` argument).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_json
from reliable_lalm.core.normalize import RuleBasedNormalizer
from reliable_lalm.core.endpoints import DEFAULT_ENDPOINT, endpoint_host, endpoint_id
from reliable_lalm.core.normalize_types import IDK_LABEL, LLMConfigError, Normalized, Normalizer
from reliable_lalm.core.plugins import load_object
from reliable_lalm.core.prompts import JUDGE_INVALID_LABEL, JUDGE_PROMPT_BUILDERS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
# A key-less local server (vLLM without --api-key) still needs some string in the client; this is
# the conventional placeholder, not a secret.
LOCAL_DUMMY_KEY = "EMPTY"
# USD per 1M tokens (input, output) for gpt-4o-mini at the time of writing; configurable.
DEFAULT_PRICE_INPUT_PER_1M = 0.15
DEFAULT_PRICE_OUTPUT_PER_1M = 0.60
CACHE_SUBDIR = "llm_normalizer"
MODES = ("fallback", "all")

_AUTO_FALLBACK_WARNED = False  # the 'auto' without-credentials message is given once per process
_AUTO_LOCK = threading.Lock()


class _Malformed(Exception):
    """A 200 response that is not a usable chat completion (broken JSON, no choices, no text)."""


class _Fatal(Exception):
    """An error that will repeat for every item (bad key, unknown model): stop asking."""


# ----------------------------------------------------------------------------------------------
# Strict reply parsing
# ----------------------------------------------------------------------------------------------

def _ws(text: str) -> str:
    return " ".join(text.split()).casefold()


def _loose(text: str) -> str:
    # Drop punctuation and quotes (Unicode category P*) so "'Dog barking.'" matches "Dog barking".
    kept = "".join(ch for ch in unicodedata.normalize("NFKC", text) if not unicodedata.category(ch).startswith("P"))
    return _ws(kept)


def _unique(matches: list[str]) -> str | None:
    distinct = {_ws(m) for m in matches}
    return matches[0] if len(distinct) == 1 else None


_REPLY_PREFIX = re.compile(r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|reply|option|choice)(?:\s+is)?\s*[:=]?|"
                           r"selected\s+option\s*[:=]?)\s*", re.IGNORECASE)
_WRAPPERS = "\"'`*[]{}<>.,;:!?\u201c\u201d\u2018\u2019 \t"
_LETTER_FIRST = re.compile(r"^\(?([A-Z])\s*[).:\]]\s*(.*)$|^\[([A-Z])\]\s*(.*)$")
_LETTER_LAST = re.compile(r"^(.*?)\s*[(\[]([A-Z])[)\]]$")


def _parse_one(text: str, choices: Sequence[str], letters: bool) -> Normalized | str | None:
    """One candidate line: a Normalized, "idk", "invalid" or None (not understood)."""
    text = _REPLY_PREFIX.sub("", text.strip().strip("*` ")).strip(_WRAPPERS)
    if not text:
        return None
    if _loose(text) == _ws(IDK_LABEL):
        return "idk"
    if _loose(text) == _ws(JUDGE_INVALID_LABEL):
        return "invalid"
    exact = _unique([c for c in choices if _ws(c) == _ws(text)]) or _unique([c for c in choices if _loose(c) == _loose(text)])
    if exact is not None:
        return exact
    first, last = _LETTER_FIRST.match(text), _LETTER_LAST.match(text)
    if re.fullmatch(r"[A-Z]", text):
        letter, rest = text, ""
    elif first:
        letter, rest = (first.group(1), first.group(2)) if first.group(1) else (first.group(3), first.group(4))
    elif last:
        letter, rest = last.group(2), last.group(1)
    else:
        return None
    rest = rest.strip(_WRAPPERS)
    by_letter = choices[ord(letter) - ord("A")] if ord(letter) - ord("A") < len(choices) else None
    if not rest:
        return by_letter if letters else None
    if _loose(rest) == _ws(IDK_LABEL):
        return "idk"
    by_text = _unique([c for c in choices if _loose(c) == _loose(rest)])
    if by_text is None or (letters and by_letter is not None and by_letter != by_text):
        return None  # a letter that contradicts the text: not guessed at
    return by_text


def parse_reply(reply: str, choices: Sequence[str], *, method: str = "llm", letters: bool = False) -> Normalized:
    """Map an LLM judge's reply to a choice, ``IDK`` or invalid.

    Tolerant of the forms judges really reply in: case, whitespace, quotes, Markdown and a trailing
    period ("'Dog barking.'"), a leading "Answer:" / "The answer is", an option letter with the text
    ("B. Dog barking", "(B) Dog barking", "Dog barking (B)"), and an explanation on later lines (the
    first line is read when the whole reply is not understood). ``letters``: the prompt showed
    lettered options, so a bare letter ("B") is that option and a letter contradicting the text makes
    the reply unparsed. ``IDK`` is a refusal; ``INVALID`` (the toolkit prompt's reply for an output
    that asserts no option) is invalid with ``method``. Anything else, including a reply naming
    several choices, is invalid with method ``"llm-unparsed"``: the judge's answer is not guessed at.
    """
    text = unicodedata.normalize("NFKC", reply or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in ([text] + lines[:1] if len(lines) > 1 else [text]):
        parsed = _parse_one(candidate, choices, letters)
        if parsed == "idk":
            return Normalized("idk", None, method)
        if parsed == "invalid":
            return Normalized("invalid", None, method)
        if parsed is not None:
            return Normalized("choice", parsed, method)
    return Normalized("invalid", None, "llm-unparsed")


# ----------------------------------------------------------------------------------------------
# What every judge does around its model: the rules first, the judge on what they leave
# ----------------------------------------------------------------------------------------------

def judge_prompts(rule: Sequence[Normalized], outputs: Sequence[str], choices: Sequence[Sequence[str]], *,
                  mode: str, prompt: str) -> dict[int, str]:
    """The judge's prompt per output index it must decide: every output (``mode="all"``) or those
    the rules could not map (``"fallback"``); ``rule`` holds the rules' results, which every
    other output keeps."""
    build = JUDGE_PROMPT_BUILDERS[prompt]
    return {i: build(outputs[i] or "", list(choices[i])) for i, r in enumerate(rule)
            if mode == "all" or r.kind == "invalid"}


def judge_detail(rule: Normalized, reply: str | None, *, cached: bool = False, error: str | None = None
                 ) -> dict[str, Any]:
    """One judged output's audit record (``last_details``): the judge's reply and the rules' decision."""
    return {"reply": reply, "cached": cached, "error": error, "rule_decision": rule.decision,
            "rule_method": rule.method}


# ----------------------------------------------------------------------------------------------
# Disk cache
# ----------------------------------------------------------------------------------------------

def cache_key(model: str, prompt: str, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """sha256 of (endpoint, model, prompt): another server or model is another key."""
    blob = json.dumps({"endpoint": endpoint, "model": model, "prompt": prompt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RulesThenJudge:
    """What both LLM judges share: the rules decide first, then the judge is asked about the outputs its
    ``mode`` sends (:func:`judge_prompts`). Subclasses set ``rule``, ``mode`` and ``prompt``."""

    rule: RuleBasedNormalizer
    mode: str
    prompt: str

    def normalize(self, output: str, choices: Sequence[str]) -> Normalized:
        return self.normalize_many([output], [choices])[0]

    def rules_and_prompts(self, outputs: Sequence[str], choices: Sequence[Sequence[str]]
                          ) -> tuple[list[Normalized], dict[int, str]]:
        """(rule result per output, judge prompt per index the judge is asked about)."""
        if len(outputs) != len(choices):
            raise ValueError(f"{len(outputs)} outputs but {len(choices)} choice lists")
        rule = self.rule.normalize_many(outputs, choices)
        return rule, judge_prompts(rule, outputs, choices, mode=self.mode, prompt=self.prompt)


class ReplyCache:
    """One JSON file per key under ``root/<key[:2]>/<key>.json``; atomic writes, safe across threads
    and processes (a reader sees a whole file or none)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, model: str, prompt: str, endpoint: str = DEFAULT_ENDPOINT) -> dict[str, Any] | None:
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: treat as a miss, it is rewritten on success
        if (entry.get("model") != model or entry.get("prompt") != prompt or entry.get("endpoint") != endpoint
                or not isinstance(entry.get("reply"), str)):
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write_json(self.path(key), entry, indent=None, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# The normalizer
# ----------------------------------------------------------------------------------------------

def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass
class _Outcome:
    reply: str | None = None
    cached: bool = False
    error: str | None = None
    usage: dict[str, int] | None = None


class OpenAINormalizer(RulesThenJudge):
    """Normalize outputs with an LLM judge (``prompt``: ``"toolkit"`` or the paper's Table 8,
    ``"paper"``) through an OpenAI-compatible chat API.

    The API key comes from ``OPENAI_API_KEY`` only; with a ``base_url`` (argument or
    ``OPENAI_BASE_URL``) and no key, the placeholder ``"EMPTY"`` is sent (key-less local servers).
    ``max_retries`` bounds both the client's transport retries and the re-asks after a malformed
    body; ``backoff_base`` / ``backoff_max`` (seconds) space the re-asks, the client its own.
    """

    name = "openai"

    def __init__(self, *, model: str = DEFAULT_MODEL, base_url: str | None = None,
                 cache_dir: str | Path | None = None, use_cache: bool = True, mode: str = "fallback",
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, max_tokens: int = 128,
                 price_input_per_1m: float = DEFAULT_PRICE_INPUT_PER_1M,
                 price_output_per_1m: float = DEFAULT_PRICE_OUTPUT_PER_1M,
                 progress: bool = True, rule_normalizer: Normalizer | None = None, refresh_cache: bool = False,
                 prompt: str = "toolkit"):
        if prompt not in JUDGE_PROMPT_BUILDERS:
            raise ValueError(f"prompt must be one of {tuple(JUDGE_PROMPT_BUILDERS)}, not {prompt!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        # local import: the rules-only path (rlalm score --normalizer rule) never loads the openai client
        import openai

        self.model = model
        self.base_url = base_url or _env(BASE_URL_ENV)
        key = _env(API_KEY_ENV)
        if key is None:
            if self.base_url is None:
                raise LLMConfigError(f"no API key: set {API_KEY_ENV}, or point {BASE_URL_ENV} / base_url "
                                     "at an OpenAI-compatible server")
            key = LOCAL_DUMMY_KEY
        # Kept only to scrub it from error texts; never logged, cached or summarized.
        self._secret = key if key != LOCAL_DUMMY_KEY else None
        # Transport errors are retried by the client (max_retries, backoff, Retry-After). The hooks
        # add what it lacks: a count of the HTTP requests really sent (retries included, for
        # summary()), and no retry of a 429 that says the quota is exhausted (waiting never brings
        # credit back), by setting the header the client obeys, ``x-should-retry: false``.
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._count_request],
                                                             "response": [_no_retry_when_quota_exhausted]})
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=timeout, max_retries=int(max_retries),
                              http_client=http_client)
        self.mode = mode
        self.prompt = prompt
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_tokens = int(max_tokens)
        self.price_input_per_1m = float(price_input_per_1m)
        self.price_output_per_1m = float(price_output_per_1m)
        self.progress = progress
        self.rule = rule_normalizer or RuleBasedNormalizer()
        root = Path(cache_dir) if cache_dir is not None else paths.CACHE_DIR / CACHE_SUBDIR
        self.cache = ReplyCache(root) if use_cache else None
        self.refresh_cache = bool(refresh_cache)  # ask again, whatever the cache holds (and rewrite it)
        self.endpoint = endpoint_id(self.base_url)
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._stats = {"calls": 0, "cache_hits": 0, "failures": 0, "retries": 0, "unparsed": 0,
                       "llm_items": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._prompts_sent = 0  # first sends; every other HTTP request is a retry
        self._errors: list[str] = []
        # Per item of the latest normalize_many call: None (rules decided) or
        # {"reply", "cached", "error", "rule_decision", "rule_method"} for audit trails.
        self.last_details: list[dict[str, Any] | None] = []

    def __repr__(self) -> str:
        return (f"OpenAINormalizer(model={self.model!r}, host={endpoint_host(self.base_url)!r}, mode={self.mode!r}, "
                f"prompt={self.prompt!r})")

    # -- public API -----------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Settings that change results, for a result store's parameters (no key, host only)."""
        return {"normalizer": self.name, "model": self.model, "base_url_host": endpoint_host(self.base_url),
                "mode": self.mode, "temperature": 0, "max_tokens": self.max_tokens, "prompt": PROMPT_NAMES[self.prompt]}

    def normalize_many(self, outputs: Sequence[str], choices: Sequence[Sequence[str]]) -> list[Normalized]:
        # Rule results always: they decide in fallback mode and are what a failed item keeps.
        rule, prompts = self.rules_and_prompts(outputs, choices)
        ask = list(prompts)
        groups: dict[str, list[int]] = {}  # identical prompts are asked once
        for i in ask:
            groups.setdefault(cache_key(self.model, prompts[i], self.endpoint), []).append(i)

        outcomes: dict[str, _Outcome] = {}
        misses: list[str] = []
        for key, idx in groups.items():
            entry = None
            if self.cache is not None and not self.refresh_cache:
                entry = self.cache.get(key, self.model, prompts[idx[0]], self.endpoint)
            # An entry that does not parse (written by an older version) is not trusted: ask again.
            if entry is not None and self._parse(entry["reply"], choices[idx[0]]).method != "llm-unparsed":
                outcomes[key] = _Outcome(reply=entry["reply"], cached=True)
            else:
                misses.append(key)
        with self._lock:
            self._stats["cache_hits"] += len(groups) - len(misses)
            self._stats["llm_items"] += len(ask)
        if misses:
            outcomes.update(self._ask_all({k: prompts[groups[k][0]] for k in misses}))

        results: list[Normalized] = list(rule)
        details: list[dict[str, Any] | None] = [None] * len(outputs)
        unparsed = 0
        for key, idx in groups.items():
            out = outcomes[key]
            if (out.reply is not None and not out.cached
                    and self._parse(out.reply, choices[idx[0]]).method != "llm-unparsed"):
                self._cache_put(key, prompts[idx[0]], out)  # only a reply that parses is worth keeping
            for i in idx:
                details[i] = judge_detail(rule[i], out.reply, cached=out.cached, error=out.error)
                if out.reply is None:
                    results[i] = Normalized(rule[i].kind, rule[i].choice, "llm-failed")
                else:
                    results[i] = self._parse(out.reply, choices[i], method="llm-cache" if out.cached else "llm")
                    unparsed += results[i].method == "llm-unparsed"
        with self._lock:
            self._stats["unparsed"] += unparsed
        self.last_details = details
        return results

    def summary(self) -> dict[str, Any]:
        """Counters since construction. ``calls`` counts HTTP requests sent (retries included);
        ``retries`` how many of them were retries; ``cache_hits`` distinct prompts answered from
        disk; the cost is estimated from the reported token usage of successful calls."""
        with self._lock:
            stats = dict(self._stats)
            stats["retries"] = stats["calls"] - self._prompts_sent
            errors = list(self._errors[:10])
        cost = (stats["prompt_tokens"] * self.price_input_per_1m
                + stats["completion_tokens"] * self.price_output_per_1m) / 1e6
        return {**stats, "estimated_cost_usd": round(cost, 10), "model": self.model,
                "base_url_host": endpoint_host(self.base_url), "mode": self.mode,
                "price_input_per_1m": self.price_input_per_1m, "price_output_per_1m": self.price_output_per_1m,
                "fatal_error": self._fatal, "errors": errors}

    # -- internals ------------------------------------------------------------------------------

    def _parse(self, reply: str, choices: Sequence[str], method: str = "llm") -> Normalized:
        return parse_reply(reply, choices, method=method, letters=self.prompt == "toolkit")

    def _ask_all(self, prompts: dict[str, str]) -> dict[str, _Outcome]:
        outcomes: dict[str, _Outcome] = {}
        workers = min(self.max_concurrency, len(prompts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-norm") as pool, \
                tqdm(total=len(prompts), desc=f"LLM normalize ({self.model})", unit="call",
                     disable=not self.progress, leave=False) as bar:
            futures = {pool.submit(self._ask_one, key, prompt): key for key, prompt in prompts.items()}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()  # _ask_one never raises
                bar.update(1)
        return outcomes

    def _ask_one(self, key: str, prompt: str) -> _Outcome:
        try:
            reply, usage = self._request_with_retries(prompt)
        except Exception as err:  # any failure leaves this item to the rules, never kills the run
            reason = self._scrub(f"{type(err).__name__}: {err}" if not isinstance(err, _Fatal) else str(err))
            with self._lock:
                self._stats["failures"] += 1
                if len(self._errors) < 100:
                    self._errors.append(reason)
            if not getattr(err, "not_sent", False):  # after a fatal error, one warning is enough
                logger.warning("LLM normalization failed for one item (kept the rule-based result): %s", reason)
            return _Outcome(error=reason)
        return _Outcome(reply=reply, usage=usage)

    def _cache_put(self, key: str, prompt: str, out: _Outcome) -> None:
        if self.cache is None:
            return
        entry = {"endpoint": self.endpoint, "model": self.model, "prompt": prompt, "reply": out.reply,
                 "usage": out.usage, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.cache.put(key, entry)
        except OSError as err:  # a full disk loses the cache entry, not the answer
            logger.warning("could not write LLM cache entry: %s", err)

    def _count_request(self, request: Any) -> None:
        """httpx request hook: one more HTTP request sent (the client's retries included)."""
        with self._lock:
            self._stats["calls"] += 1

    def _request_with_retries(self, prompt: str) -> tuple[str, dict[str, int]]:
        """One prompt's reply. Transport errors were already retried by the client; what is left
        here is classifying them (fatal or this item's failure) and asking again after a 200 with a
        malformed body (broken JSON, no choices, no text), which the client takes for success."""
        # local import: the rules-only path (rlalm score --normalizer rule) never loads the openai client
        import openai

        for attempt in range(self.max_retries + 1):
            if self._fatal is not None:
                skipped = _Fatal(f"not sent after an earlier fatal error: {self._fatal}")
                skipped.not_sent = True
                raise skipped
            if attempt == 0:
                with self._lock:
                    self._prompts_sent += 1
            try:
                return self._request(prompt)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                # Repeats for every item (bad key, unknown model or path): stop the remaining ones.
                self._fatal = self._scrub(f"{type(err).__name__}: {err}")
                raise _Fatal(self._fatal) from None
            except openai.RateLimitError as err:
                if _quota_exhausted(getattr(err, "code", None), getattr(err, "type", None)):
                    # No credit left: every item would fail alike (the client did not retry it).
                    self._fatal = self._scrub(f"{type(err).__name__}: {err}")
                    raise _Fatal(self._fatal) from None
                raise  # the client's retries are spent
            except _Malformed:
                if attempt >= self.max_retries:
                    raise
            time.sleep(min(self.backoff_max, self.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, prompt: str) -> tuple[str, dict[str, int]]:
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0,
                max_tokens=self.max_tokens)
        except ValueError as err:  # the client lets a broken JSON body through as JSONDecodeError
            raise _Malformed(f"unparseable response body ({err})") from None
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise _Malformed(f"response without choices: {str(response)[:200]!r}")
        content = choices[0].message.content
        if not isinstance(content, str):
            raise _Malformed("response message without text content")
        usage = getattr(response, "usage", None)
        tokens = {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                  "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}
        with self._lock:
            self._stats["prompt_tokens"] += tokens["prompt_tokens"]
            self._stats["completion_tokens"] += tokens["completion_tokens"]
        return content, tokens

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "<redacted>")
        return text


def _quota_exhausted(code: Any, kind: Any) -> bool:
    return "insufficient_quota" in (code, kind)


def _no_retry_when_quota_exhausted(response: Any) -> None:
    """httpx response hook: a 429 whose error says ``insufficient_quota`` gets the header the
    openai client obeys (``x-should-retry: false``), so it is not retried like a rate limit."""
    if response.status_code != 429:
        return
    response.read()
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return
    if isinstance(error, dict) and _quota_exhausted(error.get("code"), error.get("type")):
        response.headers["x-should-retry"] = "false"


# ----------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------

NORMALIZER_KINDS = ("rule", "openai", "auto", "all")  # what build_normalizer accepts (profiles check against it)
HF_PREFIX = "hf:"  # "hf:<model>": a local transformers chat model as the judge
# Loaded by reference: the local judge needs torch, which the scoring core never imports.
HF_JUDGE = "reliable_lalm.methods.hf_judge:HFJudgeNormalizer"
JUDGE_PROMPTS = tuple(JUDGE_PROMPT_BUILDERS)
PROMPT_NAMES = {"paper": "paper-table-8", "toolkit": "toolkit-judge-v1"}


def normalizer_kind_error(kind: str) -> str | None:
    """Why ``kind`` is not a normalizer kind (None when it is one)."""
    if kind in NORMALIZER_KINDS or (kind.startswith(HF_PREFIX) and kind[len(HF_PREFIX):].strip()):
        return None
    return f"unknown normalizer {kind!r}: one of {', '.join(NORMALIZER_KINDS)}, or {HF_PREFIX}<model>"


def build_normalizer(kind: str = "auto", *, base_url: str | None = None, model: str | None = None,
                     cache_dir: str | Path | None = None, mode: str = "fallback", **kw: Any) -> Normalizer:
    """``"rule"``: the rule-based normalizer. ``"openai"``: :class:`OpenAINormalizer` (needs
    ``OPENAI_API_KEY`` or a base URL). ``"auto"``: OpenAI when a key or base URL is set, else the
    rules, saying so once per process. ``"all"``: the paper's setting (Table 8): *every* output is
    normalized by the LLM (``mode="all"``) when a key or base URL is set; without one, the rules,
    with a warning (callers that report results say so: :func:`fell_back_to_rules`).
    ``"hf:<model>"``: a local transformers chat model (a hub id in the HF cache or a folder) as the
    judge of the outputs the rules cannot map (``mode="all"``: of every output), batched and greedy
    (:class:`reliable_lalm.methods.hf_judge.HFJudgeNormalizer`; needs torch). ``prompt``: the LLM
    judge's prompt, ``"paper"`` (Table 8) for ``"all"`` (the paper's setting), ``"toolkit"`` otherwise.
    ``kw`` goes to the LLM normalizer."""
    for name in kw:
        if re.search(r"key|token|secret", name, re.IGNORECASE):
            raise TypeError(f"{name!r} is not accepted: the API key is read only from ${API_KEY_ENV}")
    if kind == "rule":
        return RuleBasedNormalizer()
    error = normalizer_kind_error(kind)
    if error:
        raise ValueError(error)
    kw.setdefault("prompt", "paper" if kind == "all" else "toolkit")
    if kind.startswith(HF_PREFIX):
        return load_object(HF_JUDGE)(kind[len(HF_PREFIX):].strip(), mode=mode, **kw)
    if kind == "all":
        kind, mode = "auto", "all"
    base = base_url or _env(BASE_URL_ENV)
    if _env(API_KEY_ENV) is None and base is None:
        if kind == "openai":
            raise LLMConfigError(f"the OpenAI normalizer needs {API_KEY_ENV} or a base URL "
                                 f"(argument or {BASE_URL_ENV})")
        _warn_auto_fallback()
        return RuleBasedNormalizer()
    return OpenAINormalizer(model=model or DEFAULT_MODEL, base_url=base, cache_dir=cache_dir, mode=mode, **kw)


def resolve_normalizer(normalizer: Normalizer | str | None = None, **kw: Any) -> Normalizer:
    """A normalizer object from an object, a kind for :func:`build_normalizer` or None (the rules)."""
    if normalizer is None or isinstance(normalizer, str):
        return build_normalizer(normalizer or "rule", **kw)
    return normalizer


FALLBACK_WARNING = ("WARNING (rlalm): LLM answer normalization was asked for ({kind!r}) but neither "
                    f"{API_KEY_ENV} nor {BASE_URL_ENV} is set: every output was normalized by the RULES "
                    "instead (not the paper's GPT-4o-mini setting)")


def fell_back_to_rules(kind: str, normalizer: Normalizer) -> bool:
    """Whether a normalizer built for ``kind`` is the rules although the LLM was asked for."""
    return kind in ("auto", "all") and not isinstance(normalizer, OpenAINormalizer)


def describe_normalizer(kind: str, normalizer: Normalizer) -> str:
    """One sentence naming what normalized the answers (for table captions)."""
    if isinstance(normalizer, OpenAINormalizer):
        which = "every output" if normalizer.mode == "all" else "outputs the rules cannot map"
        prompt = "Table 8 prompt" if normalizer.prompt == "paper" else "toolkit judge prompt"
        return f"Answers normalized by {normalizer.model} at {endpoint_host(normalizer.base_url)} ({which}; {prompt})."
    describe = getattr(normalizer, "describe", None)
    if callable(describe):  # another judge (the local transformers one) says what it is
        return describe()
    if fell_back_to_rules(kind, normalizer):
        return (f"Answers normalized by the rule-based normalizer: LLM normalization ({kind!r}) was asked for but "
                f"no {API_KEY_ENV} / {BASE_URL_ENV} was set.")
    return "Answers normalized by the rule-based normalizer."


def _warn_auto_fallback() -> None:
    global _AUTO_FALLBACK_WARNED
    with _AUTO_LOCK:
        if _AUTO_FALLBACK_WARNED:
            return
        _AUTO_FALLBACK_WARNED = True
    logger.warning("LLM answer normalization is off: neither %s nor %s is set; using the rule-based "
                   "normalizer only (no LLM normalization)", API_KEY_ENV, BASE_URL_ENV)
