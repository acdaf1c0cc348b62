"""Analysers: the rule-based scorer, robust parsing of model answers, and the LLM backend against a
real local OpenAI-compatible server (answers, tokens, timeouts, 5xx, garbage, breaker, fallback)."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core.redis_client import get_redis
from app.pipeline.ai.analysers import AnalyserUnavailable, BatchFacts, LlmAnalyser, RuleAnalyser, parse_llm_json
from app.pipeline.ai.breakers import BreakerConfig, CircuitBreaker, CircuitOpenError
from tests.ai_servers import completion


def facts(kinds, hour=14, camera="front_door", name="Front Door", minutes=0.5, conf=0.8):
    end = datetime(2026, 11, 20, hour, 30, tzinfo=UTC)
    dets = [
        {
            "id": i,
            "object_type": k,
            "confidence": conf,
            "bbox": {"x": 1, "y": 2, "width": 3, "height": 4},
            "detected_at": end,
        }
        for i, k in enumerate(kinds)
    ]
    return BatchFacts("b1", camera, name, end - timedelta(minutes=minutes), end, dets)


def test_rules_score_people_above_pets_and_night_above_day():
    rules = RuleAnalyser("UTC")
    cat = rules.analyse(facts(["cat"], camera="yard", name="Yard"))
    person_day = rules.analyse(facts(["person"], camera="yard", name="Yard"))
    person_night = rules.analyse(facts(["person"], hour=23, camera="yard", name="Yard"))
    crowd_night_door = rules.analyse(facts(["person"] * 4 + ["face"], hour=2))
    assert cat.risk_score < person_day.risk_score < person_night.risk_score < crowd_night_door.risk_score <= 100
    assert "night" in person_night.reasoning and "night" not in person_day.reasoning
    assert "entry point" in crowd_night_door.reasoning and "4 people" in crowd_night_door.reasoning
    assert crowd_night_door.summary.startswith("1 face, 4 persons on Front Door")
    assert rules.analyse(facts([])).risk_score == 0


def test_rules_use_the_site_time_zone():
    late_in_tokyo = RuleAnalyser("Asia/Tokyo").analyse(facts(["person"], hour=14, camera="yard", name="Yard"))
    assert "night" in late_in_tokyo.reasoning  # 14:30 UTC is 23:30 in Tokyo


@pytest.mark.parametrize(
    "text,score",
    [
        ('{"risk_score": 72, "risk_level": "high", "summary": "s", "reasoning": "r"}', 72),
        ('```json\n{"risk_score": 40, "summary": "s"}\n```', 40),
        ('<think>{"risk_score": 1} is wrong</think>Here you go: {"risk_score": "85/100", "summary": "x"} thanks', 85),
        ('{"note": "x"} then {"risk_score": 150}', 100),
        ('{"risk_score": -5}', 0),
        ('{"risk_score": 33.6}', 34),
    ],
)
def test_parse_llm_json(text, score):
    assert parse_llm_json(text)["risk_score"] == score


@pytest.mark.parametrize(
    "text", ["no json here", '{"risk_score": "high"}', '{"risk": 5}', '{"risk_score": true}', '{"risk_score": 5', ""]
)
def test_parse_llm_json_refuses(text):
    with pytest.raises(ValueError):
        parse_llm_json(text)


def test_llm_backend_asks_for_json_and_records_tokens(scripted_server):
    content = (
        '<think>door at night</think>```json\n{"risk_score": 78, "risk_level": "high", "summary": "Person at '
        'the door at night", "reasoning": "Unknown person, late hour."}\n```'
    )
    server = scripted_server(lambda req: (200, completion(content), 0))
    llm = LlmAnalyser(server.url + "/v1", "nemotron", timeout=5, max_tokens=300, api_key="k123")
    result = llm.analyse(facts(["person"], hour=23))
    assert (result.risk_score, result.model_level, result.input_tokens, result.output_tokens) == (78, "high", 321, 54)
    assert result.summary == "Person at the door at night" and result.analyser == "llm:nemotron"
    req = server.requests[0]
    assert req.path == "/v1/chat/completions" and req.headers["Authorization"] == "Bearer k123"
    body = req.json()
    assert body["model"] == "nemotron" and body["max_tokens"] == 300 and body["temperature"] == 0
    assert "risk_score" in body["messages"][0]["content"] and "person=1" in body["messages"][1]["content"]


@pytest.mark.parametrize(
    "answer,message",
    [
        ((500, {"error": "oom"}, 0), "HTTP 500"),
        ((502, "bad gateway", 0), "HTTP 502"),
        ((200, "this is not json at all", 0), "not a chat completion"),
        ((200, {"choices": []}, 0), "not a chat completion"),
        ((200, completion("I think the risk is moderate."), 0), "unusable"),
        ((200, completion('{"risk_score": 50}'), 2.0), "timed out"),
    ],
)
def test_llm_backend_failures(scripted_server, answer, message):
    server = scripted_server(lambda req: answer)
    t0 = time.monotonic()
    with pytest.raises(AnalyserUnavailable, match=message):
        LlmAnalyser(server.url + "/v1", "m", timeout=0.5, max_tokens=100).analyse(facts(["person"]))
    assert time.monotonic() - t0 < 5


def test_llm_breaker_opens_and_recovers(scripted_server, settings):
    mode = {"answer": (503, "loading model", 0)}
    server = scripted_server(lambda req: mode["answer"])
    llm = LlmAnalyser(server.url + "/v1", "m", timeout=1, max_tokens=100)
    b = CircuitBreaker(f"llm-{uuid.uuid4().hex[:8]}", get_redis(settings), BreakerConfig(recovery_seconds=1.0))
    for _ in range(5):
        with pytest.raises(AnalyserUnavailable):
            b.call(llm.analyse, facts(["person"]))
    with pytest.raises(CircuitOpenError):
        b.call(llm.analyse, facts(["person"]))
    assert len(server.requests) == 5
    time.sleep(1.1)
    mode["answer"] = (200, completion('{"risk_score": 20, "summary": "ok"}'), 0)
    for _ in range(2):
        assert b.call(llm.analyse, facts(["person"])).risk_score == 20
    assert b.snapshot()["state"] == "closed"


def test_llm_probe_uses_the_models_endpoint(scripted_server):
    server = scripted_server(
        lambda req: (200, {"data": [{"id": "m"}]}, 0) if req.path == "/v1/models" else (404, {}, 0)
    )
    assert LlmAnalyser(server.url + "/v1", "m", 1, 10).probe(0.5) == (True, None)
    down = scripted_server(lambda req: (503, {}, 0))
    ok, error = LlmAnalyser(down.url + "/v1", "m", 1, 10).probe(0.5)
    assert not ok and "503" in error
