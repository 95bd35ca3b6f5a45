"""LLM normalization against a local OpenAI-compatible server, through the real ``openai`` client.

Nothing here reaches the real OpenAI API: every request goes to tests/chat_server.py on 127.0.0.1.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chat_server lives beside this file

from chat_server import ChatServer, Hang, Raw, Reply, Status, user_prompt  # noqa: E402

from reliable_lalm.methods import llm_judge
from reliable_lalm.methods.llm_judge import (  # noqa: E402
    LLMConfigError,
    OpenAINormalizer,
    build_normalizer,
    cache_key,
    parse_reply,
)
from reliable_lalm.core.normalize import RuleBasedNormalizer  # noqa: E402
from reliable_lalm.core.prompts import build_normalization_prompt  # noqa: E402

CHOICES = ["Dog barking", "Cat meowing", "Car horn", "Rain"]
MARKER = "sk-test-MARKER-7f3c9e1d2b4a"


@pytest.fixture(autouse=True)
def clean_env(no_credentials):
    """Every test here runs without real credentials, endpoints or proxies, with a private cache."""


@pytest.fixture
def serve():
    servers: list[ChatServer] = []

    def start(responder) -> ChatServer:
        server = ChatServer(responder).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make(server: ChatServer, tmp_path: Path, **kw) -> OpenAINormalizer:
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("backoff_base", 0.01)  # fast retries in tests
    kw.setdefault("progress", False)
    kw.setdefault("mode", "all")  # every item goes to the server unless a test says otherwise
    return OpenAINormalizer(base_url=server.base_url, **kw)


def test_parse_reply_is_tolerant_but_never_guesses():
    assert parse_reply("Dog barking", CHOICES) == parse_reply("  dog   BARKING ", CHOICES)
    assert parse_reply("dog barking", CHOICES).choice == "Dog barking"
    assert parse_reply('"Car horn."', CHOICES).choice == "Car horn"  # quotes/punctuation stripped
    assert parse_reply("IDK", CHOICES).kind == "idk"
    assert parse_reply("idk.", CHOICES).kind == "idk"
    assert parse_reply("The answer is Dog barking", CHOICES).choice == "Dog barking"
    assert parse_reply("B. Cat meowing", CHOICES).choice == "Cat meowing"
    assert parse_reply("A", CHOICES, letters=True).choice == "Dog barking"
    assert parse_reply("A. Cat meowing", CHOICES, letters=True).kind == "invalid"  # letter contradicts text
    for bad in ("A", "Dog barking or Cat meowing", "", "rain!!! maybe", "A dog"):
        result = parse_reply(bad, CHOICES)
        assert (result.kind, result.method) == ("invalid", "llm-unparsed"), bad
    # Two choices equal after stripping punctuation: ambiguous, so not guessed.
    assert parse_reply("ab", ["a-b", "a.b", "c"]).kind == "invalid"
    assert parse_reply("a-b", ["a-b", "a.b", "c"]).choice == "a-b"


def test_success_sends_table8_prompt(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    server = serve(lambda body, n: Reply("Cat meowing") if "purr" in user_prompt(body) else Reply("IDK"))
    norm = make(server, tmp_path, model="test-model", prompt="paper")
    outputs = ["it purrs, so the cat", "no idea honestly"]
    results = norm.normalize_many(outputs, [CHOICES, CHOICES])

    assert [(r.kind, r.choice, r.method) for r in results] == [("choice", "Cat meowing", "llm"), ("idk", None, "llm")]
    bodies = sorted(server.requests, key=lambda b: user_prompt(b))
    assert [user_prompt(b) for b in bodies] == sorted(build_normalization_prompt(o, CHOICES) for o in outputs)
    assert all(b["model"] == "test-model" and b["temperature"] == 0 for b in bodies)
    assert all(h["authorization"] == f"Bearer {MARKER}" for h in server.headers)  # key from the env
    s = norm.summary()
    assert (s["calls"], s["retries"], s["failures"], s["cache_hits"]) == (2, 0, 0, 0)
    assert (s["prompt_tokens"], s["completion_tokens"]) == (200, 6)
    assert s["estimated_cost_usd"] == pytest.approx((200 * 0.15 + 6 * 0.60) / 1e6)
    assert s["base_url_host"] == f"127.0.0.1:{server.port}" and s["model"] == "test-model"


@pytest.mark.parametrize("first", [Status(429, "slow down"), Status(500, "boom"), Status(503, "busy"),
                                   Raw(b'{"choices": [{"mess'), Raw(b"{}")])
def test_transient_error_then_success_is_retried(serve, tmp_path, first):
    server = serve(lambda body, n: first if n == 0 else Reply("Rain"))
    norm = make(server, tmp_path)
    [result] = norm.normalize_many(["pitter patter"], [CHOICES])
    assert (result.choice, result.method) == ("Rain", "llm")
    assert server.count == 2
    s = norm.summary()
    assert (s["calls"], s["retries"], s["failures"]) == (2, 1, 0)


def test_retries_exhausted_keeps_rule_result(serve, tmp_path):
    server = serve(lambda body, n: Status(500, "always down"))
    norm = make(server, tmp_path, max_retries=2)
    # 'Rain' is a choice verbatim, so the rules map it; the failed LLM call must keep that.
    rule = RuleBasedNormalizer().normalize_many(["Rain"], [CHOICES])[0]
    assert rule.kind == "choice"
    [result] = norm.normalize_many(["Rain"], [CHOICES])
    assert (result.kind, result.choice, result.method) == (rule.kind, rule.choice, "llm-failed")
    assert server.count == 3  # one try + max_retries
    s = norm.summary()
    assert (s["failures"], s["retries"]) == (1, 2)
    assert "InternalServerError" in s["errors"][0] and "always down" in s["errors"][0]
    assert norm.last_details[0]["error"] == s["errors"][0]
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_garbage_reply_is_unparsed(serve, tmp_path):
    server = serve(lambda body, n: Reply("Probably the dog, but it could be rain."))
    norm = make(server, tmp_path)
    [result] = norm.normalize_many(["woof?"], [CHOICES])
    assert (result.kind, result.method) == ("invalid", "llm-unparsed")
    assert norm.summary()["unparsed"] == 1 and norm.summary()["failures"] == 0
    assert norm.last_details[0]["reply"] == "Probably the dog, but it could be rain."


def test_broken_json_body_fails_cleanly(serve, tmp_path):
    server = serve(lambda body, n: Raw(b'{"choices": [{"message": {"content": "Ra'))
    norm = make(server, tmp_path, max_retries=1)
    [result] = norm.normalize_many(["pitter patter"], [CHOICES])
    assert (result.kind, result.method) == ("invalid", "llm-failed")  # rule result kept, run goes on
    assert server.count == 2
    assert "unparseable response body" in norm.summary()["errors"][0]


def test_timeout_leaves_item_unnormalized_and_run_continues(serve, tmp_path):
    server = serve(lambda body, n: Hang(5.0) if "SLOW" in user_prompt(body) else Reply("Car horn"))
    norm = make(server, tmp_path, timeout=0.5, max_retries=1)
    start = time.monotonic()
    results = norm.normalize_many(["beep beep", "SLOW answer", "honk"], [CHOICES] * 3)
    elapsed = time.monotonic() - start
    assert [r.method for r in results] == ["llm", "llm-failed", "llm"]
    assert results[0].choice == results[2].choice == "Car horn"
    assert results[1].kind == "invalid"  # what the rules made of "SLOW answer"
    s = norm.summary()
    assert s["failures"] == 1 and s["retries"] == 1 and "Timeout" in s["errors"][0]
    assert elapsed < 4.0  # two 0.5 s attempts, not the server's 5 s


def test_cache_hit_on_rerun_sends_nothing(serve, tmp_path):
    server = serve(lambda body, n: Reply("Dog barking"))
    outputs, choices = ["woof woof", "a bark", "woof woof"], [CHOICES] * 3
    first = make(server, tmp_path, prompt="paper").normalize_many(outputs, choices)
    assert server.count == 2  # the repeated output is asked once
    assert [r.method for r in first] == ["llm"] * 3

    # A fresh normalizer on the same endpoint must not send anything (another endpoint would be
    # another key: tests/test_adversarial.py).
    again = make(server, tmp_path, prompt="paper")
    second = again.normalize_many(outputs, choices)
    assert server.count == 2
    assert [(r.choice, r.method) for r in second] == [("Dog barking", "llm-cache")] * 3
    s = again.summary()
    assert (s["calls"], s["cache_hits"], s["estimated_cost_usd"]) == (0, 2, 0)

    files = sorted((tmp_path / "cache").rglob("*.json"))
    key = cache_key("gpt-4o-mini", build_normalization_prompt("woof woof", CHOICES), server.base_url)
    assert key in {f.stem for f in files} and len(files) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave no temp files
    # Another model is another key.
    third = serve(lambda body, n: Reply("Dog barking"))
    make(third, tmp_path, model="other-model", prompt="paper").normalize_many(outputs[:1], choices[:1])
    assert third.count == 1


def test_concurrency_is_bounded(serve, tmp_path):
    server = serve(lambda body, n: Reply("Rain", delay=0.25))
    norm = make(server, tmp_path, max_concurrency=3)
    results = norm.normalize_many([f"drops {i}" for i in range(12)], [CHOICES] * 12)
    assert all(r.choice == "Rain" for r in results)
    assert server.count == 12
    assert server.max_in_flight == 3  # parallel, but never above the bound


def test_fallback_mode_asks_only_what_rules_cannot_map(serve, tmp_path):
    server = serve(lambda body, n: Reply("Cat meowing"))
    outputs = ["Car horn", "zzq xqv"]
    rule = RuleBasedNormalizer().normalize_many(outputs, [CHOICES] * 2)
    assert (rule[0].kind, rule[1].kind) == ("choice", "invalid")  # the premise of this test
    norm = make(server, tmp_path, mode="fallback")
    results = norm.normalize_many(outputs, [CHOICES] * 2)
    assert results[0] == rule[0]  # decided by the rules, untouched
    assert (results[1].choice, results[1].method) == ("Cat meowing", "llm")
    assert server.count == 1 and "zzq xqv" in user_prompt(server.requests[0])


def test_fatal_auth_error_stops_asking(serve, tmp_path):
    server = serve(lambda body, n: Status(401, "invalid api key"))
    norm = make(server, tmp_path, max_concurrency=1)
    results = norm.normalize_many([f"x{i}" for i in range(5)], [CHOICES] * 5)
    assert all(r.method == "llm-failed" for r in results)
    assert server.count == 1  # the other four are not sent
    s = norm.summary()
    assert s["failures"] == 5 and "AuthenticationError" in s["fatal_error"]


def test_insufficient_quota_is_not_retried(serve, tmp_path):
    server = serve(lambda body, n: Status(429, "You exceeded your current quota", error_code="insufficient_quota"))
    norm = make(server, tmp_path, max_concurrency=1)
    results = norm.normalize_many(["x", "y"], [CHOICES] * 2)
    assert [r.method for r in results] == ["llm-failed"] * 2
    assert server.count == 1 and norm.summary()["retries"] == 0


def test_retry_after_header_is_honoured(serve, tmp_path):
    limited = Status(429, "slow down", headers={"Retry-After": "0.6"})
    server = serve(lambda body, n: limited if n == 0 else Reply("Rain"))
    start = time.monotonic()
    [result] = make(server, tmp_path).normalize_many(["drip"], [CHOICES])
    assert result.choice == "Rain" and time.monotonic() - start >= 0.6


def test_key_never_written(serve, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    caplog.set_level(logging.DEBUG)

    def respond(body, n):
        prompt = user_prompt(body)
        if "echo" in prompt:  # a hostile/buggy server echoing the credentials into an error
            return Status(400, f"bad request from {server.headers[n]['authorization']}")
        return Status(500, "down") if "fail" in prompt else Reply("Rain")

    server = serve(respond)
    cache = tmp_path / "cache"
    norm = make(server, tmp_path, cache_dir=cache, max_retries=1)
    norm.normalize_many(["drip", "echo please", "fail please"], [CHOICES] * 3)
    assert all(h["authorization"] == f"Bearer {MARKER}" for h in server.headers)  # the key was in use
    (tmp_path / "summary.json").write_text(json.dumps(norm.summary()))
    (tmp_path / "params.json").write_text(json.dumps(norm.params()))
    (tmp_path / "details.json").write_text(json.dumps(norm.last_details))

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(list(cache.rglob("*.json"))) == 1 and len(written) >= 4
    for path in written:
        assert MARKER not in path.read_text(encoding="utf-8", errors="replace"), path
    assert MARKER not in caplog.text and MARKER not in repr(norm)
    assert any("<redacted>" in e for e in norm.summary()["errors"])  # scrubbed, not dropped


def test_build_normalizer_kinds(serve, tmp_path, monkeypatch):
    assert isinstance(build_normalizer("rule"), RuleBasedNormalizer)
    with pytest.raises(LLMConfigError):
        build_normalizer("openai")
    with pytest.raises(ValueError):
        build_normalizer("gpt")
    with pytest.raises(TypeError, match="OPENAI_API_KEY"):
        build_normalizer("openai", base_url="http://127.0.0.1:9/v1", api_key="sk-x")
    with pytest.raises(TypeError):
        OpenAINormalizer(api_key="sk-x")  # no way to pass a key as an argument

    # A base URL without a key: a key-less local server gets the placeholder "EMPTY".
    server = serve(lambda body, n: Reply("Rain"))
    norm = build_normalizer("auto", base_url=server.base_url, progress=False)
    assert isinstance(norm, OpenAINormalizer) and norm.mode == "fallback" and norm.model == "gpt-4o-mini"
    assert norm.cache.root == tmp_path / "default-cache" / "llm_normalizer"
    assert norm.normalize("zzq xqv", CHOICES).choice == "Rain"
    assert server.headers[-1]["authorization"] == "Bearer EMPTY"

    # OPENAI_BASE_URL alone selects the LLM too, and is where requests go.
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    norm = build_normalizer("openai", model="m2", mode="all", cache_dir=tmp_path / "c2", progress=False)
    assert norm.normalize("Rain", CHOICES).method == "llm" and server.requests[-1]["model"] == "m2"


def test_auto_without_credentials_uses_rules_and_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(llm_judge, "_AUTO_FALLBACK_WARNED", False)
    caplog.set_level(logging.WARNING, logger="reliable_lalm.methods.llm_judge")
    first, second = build_normalizer("auto"), build_normalizer()
    assert isinstance(first, RuleBasedNormalizer) and isinstance(second, RuleBasedNormalizer)
    warned = [r for r in caplog.records if "OPENAI_API_KEY" in r.getMessage()]
    assert len(warned) == 1 and "rule-based" in warned[0].getMessage()
