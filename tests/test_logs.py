"""Structured logs: JSON by default (console on a terminal), one line per request with what an
operator needs, upstream errors with their mapped class, prompts and completions only when
``server.log_prompts`` asks for them, and no configured secret anywhere in the output."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import orjson
import pytest
import structlog
from harness import TRANSCRIPTS, Received, Writer, http_response, sse_body, stream_response
from multidict import CIMultiDict
from observe_helpers import free_port, rosetta_process

from proxy.config import load_settings
from proxy.log import MASK, configure_logging, redactor, secrets_of

WIRE = TRANSCRIPTS / "openai"
USER = [{"role": "user", "content": "Say something."}]
CANARY = "Zanzibar-canary-prompt"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test may configure logging its own way; leave none of it behind."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_rosetta_handler", False)]:
        root.removeHandler(handler)
    structlog.reset_defaults()


def lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of an output (other lines, such as the start banner, are skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def requests_logged(text: str) -> list[dict[str, Any]]:
    return [line for line in lines(text) if line["event"] == "request"]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- setup and redaction ------------------------------------------------------------------------


def test_json_by_default_and_console_on_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("auto", "info", [], stream=out)
    structlog.get_logger("rosetta").info("hello", answer=42)
    (line,) = lines(out.getvalue())
    assert line["event"] == "hello" and line["answer"] == 42 and line["level"] == "info" and line["timestamp"]

    tty = FakeTTY()
    configure_logging("auto", "info", [], stream=tty)
    structlog.get_logger("rosetta").info("hello", answer=42)
    text = tty.getvalue()
    assert "hello" in text and "answer" in text and not text.startswith("{")

    forced = FakeTTY()
    configure_logging("json", "info", [], stream=forced)
    structlog.get_logger("rosetta").info("hello")
    assert lines(forced.getvalue())[0]["event"] == "hello"


def test_the_level_filters() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", [], stream=out)
    log = structlog.get_logger("rosetta")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in lines(out.getvalue())] == ["loud"]


def test_secrets_are_masked_in_values_nested_values_reprs_and_tracebacks() -> None:
    secret = "sk-very-secret-value-123"
    out = io.StringIO()
    configure_logging("json", "debug", [secret, "abc"], stream=out)
    log = structlog.get_logger("rosetta")

    class Holder:
        def __repr__(self) -> str:
            return f"Holder(key={secret!r})"

    log.info("values", plain=f"Bearer {secret}", nested={"a": [secret, {"b": secret}]}, holder=Holder(), short="abc")
    try:
        raise ValueError(f"upstream said {secret}")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert secret not in text
    first, second = lines(text)
    assert first["plain"] == f"Bearer {MASK}"
    assert first["nested"] == {"a": [MASK, {"b": MASK}]}
    assert first["holder"] == f"Holder(key='{MASK}')"
    assert first["short"] == "abc"  # too short to be masked without wrecking every line
    assert "ValueError" in second["exception"] and MASK in second["exception"]


def test_the_rendered_line_is_masked_too() -> None:
    secret = "sk-console-secret-456"
    out = io.StringIO()
    configure_logging("console", "info", [secret], stream=out)
    structlog.get_logger("rosetta").info(f"event naming {secret}", other=("x", secret))
    assert secret not in out.getvalue() and MASK in out.getvalue()
    processor = redactor([secret])
    assert processor(None, "info", {"event": "e", "k": secret}) == {"event": "e", "k": MASK}


def test_standard_library_logs_go_through_the_same_redaction_and_renderer() -> None:
    secret = "sk-stdlib-secret-789"
    out = io.StringIO()
    configure_logging("json", "info", [secret], stream=out)
    logging.getLogger("aiohttp.server").error("Error handling request with %s", secret)
    try:
        raise RuntimeError(secret)
    except RuntimeError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    text = out.getvalue()
    assert secret not in text
    first, second = lines(text)
    assert first["event"] == f"Error handling request with {MASK}" and first["logger"] == "aiohttp.server"
    assert first["level"] == "error"
    assert "RuntimeError" in second["exception"]


def test_secrets_of_a_config_include_keys_auth_headers_url_passwords_and_secret_options() -> None:
    settings = load_settings(
        {
            "server": {"api_keys": ["gw-key-one", "gw-key-two"]},
            "backends": {
                "a": {
                    "type": "openai", "url": "http://user:url-password@127.0.0.1:9/v1?api_key=query-secret&x=plain",
                    "headers": {"Authorization": "Bearer header-token", "X-Trace": "visible"},
                },
                "b": {"type": "openai", "url": "http://127.0.0.1:9/v1", "api_key": "backend-key"},
                "c": {"type": "mock"},
            },
            "models": [],
        },
        env={},
    )
    secrets = set(secrets_of(settings))
    assert {"gw-key-one", "gw-key-two", "backend-key", "Bearer header-token", "header-token", "url-password", "query-secret"} <= secrets
    assert "visible" not in secrets and "plain" not in secrets


# --- the request line in the real app -------------------------------------------------------------


MOCK = {
    "server": {"api_keys": ["gw-first-key-000", "gw-second-key-111"], "log_format": "json"},
    "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
    "models": [{"name": "m", "backend": "mock", "model": "lorem"}, {"name": "echo", "backend": "mock", "model": "echo"}],
}


async def post(url: str, body: Any, key: str | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as response:
            return response.status, CIMultiDict(response.headers), await response.read()


async def test_one_line_per_request_with_what_an_operator_needs(rosetta: Any, capsys: pytest.CaptureFixture[str]) -> None:
    running = await rosetta(MOCK)
    chat = running.base_url + "/chat/completions"
    status, headers, body = await post(chat, {"model": "m", "messages": USER, "max_tokens": 5}, "gw-second-key-111")
    assert status == 200
    usage = orjson.loads(body)["usage"]
    status, stream_headers, _ = await post(chat, {"model": "m", "messages": USER, "stream": True}, "gw-first-key-000")
    assert status == 200
    status, error_headers, _ = await post(chat, {"model": "m", "messages": USER, "top_p": 7}, "gw-first-key-000")
    assert status == 400

    logged = requests_logged(capsys.readouterr().err)
    assert [line["request_id"] for line in logged] == [
        headers["x-request-id"], stream_headers["x-request-id"], error_headers["x-request-id"]
    ]
    first, second, third = logged
    assert first["level"] == "info"
    assert (first["key_owner"], second["key_owner"]) == ("key1", "key0")
    assert (first["route"], first["backend"], first["upstream_model"], first["operation"]) == ("m", "mock", "lorem", "chat")
    assert (first["stream"], second["stream"]) == (False, True)
    assert first["status"] == 200 and first["error_type"] is None
    assert (first["prompt_tokens"], first["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert first["usage_source"] == "estimated" and first["finish_reasons"] == ["length"]
    for key in ("duration_ms", "ttft_ms", "upstream_ms", "overhead_ms"):
        assert isinstance(first[key], float) and first[key] >= 0, key
    assert first["overhead_ms"] <= first["duration_ms"]
    assert first["retries"] == 0 and first["client_disconnected"] is False
    assert third["status"] == 400 and third["error_type"] == "invalid_request_error"


async def test_upstream_errors_are_logged_with_their_mapped_class(upstream: Any, rosetta: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upstream.add("POST", "/v1/chat/completions", http_response(503, {"error": {"message": "overloaded"}}))
    config = {
        "backends": {
            "up": {"type": "openai", "url": upstream.url + "/v1"},
            "dead": {"type": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
        },
        "models": [{"name": "up", "backend": "up", "model": "x"}, {"name": "dead", "backend": "dead", "model": "x"}],
    }
    running = await rosetta(config)
    assert (await post(running.base_url + "/chat/completions", {"model": "up", "messages": USER}))[0] == 503
    assert (await post(running.base_url + "/chat/completions", {"model": "dead", "messages": USER}))[0] == 502
    overloaded, refused = requests_logged(capsys.readouterr().err)
    assert overloaded["level"] == "warning"
    assert (overloaded["status"], overloaded["error_type"], overloaded["error_kind"]) == (503, "upstream_error", "5xx")
    assert (refused["status"], refused["error_type"], refused["error_kind"]) == (502, "upstream_error", "refused")


async def test_prompts_and_completions_are_not_logged_by_default(rosetta: Any, capsys: pytest.CaptureFixture[str]) -> None:
    running = await rosetta(MOCK)
    messages = [{"role": "user", "content": f"Please repeat {CANARY} now"}]
    for stream in (False, True):
        status, _, body = await post(running.base_url + "/chat/completions", {"model": "echo", "messages": messages, "stream": stream}, "gw-first-key-000")
        assert status == 200 and CANARY.encode() in body
    status, _, body = await post(running.base_url + "/completions", {"model": "echo", "prompt": CANARY}, "gw-first-key-000")
    assert status == 200 and CANARY.encode() in body
    err = capsys.readouterr().err
    assert len(requests_logged(err)) == 3
    assert CANARY not in err
    assert not [line for line in lines(err) if line["event"] == "request_content"]


async def test_log_prompts_logs_the_request_messages_and_the_answer(rosetta: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = {**MOCK, "server": {**MOCK["server"], "log_prompts": True}}
    running = await rosetta(config)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Please repeat {CANARY}"}]
    answers = []
    status, headers, body = await post(running.base_url + "/chat/completions", {"model": "echo", "messages": messages}, "gw-first-key-000")
    assert status == 200
    answers.append((headers["x-request-id"], orjson.loads(body)["choices"][0]["message"]["content"]))
    status, headers, _ = await post(
        running.base_url + "/chat/completions", {"model": "echo", "messages": messages, "stream": True}, "gw-first-key-000"
    )
    assert status == 200
    answers.append((headers["x-request-id"], answers[0][1]))
    status, headers, body = await post(running.base_url + "/completions", {"model": "echo", "prompt": CANARY}, "gw-first-key-000")
    assert status == 200
    completion_text = orjson.loads(body)["choices"][0]["text"]

    content = [line for line in lines(capsys.readouterr().err) if line["event"] == "request_content"]
    assert [c["request_id"] for c in content] == [answers[0][0], answers[1][0], headers["x-request-id"]]
    for line, (_, text) in zip(content[:2], answers, strict=True):
        assert line["messages"] == messages and line["prompt"] is None
        assert line["completion"] == [text]
    assert content[2]["prompt"] == CANARY and content[2]["messages"] is None
    assert content[2]["completion"] == [completion_text]


# --- no secret anywhere: the whole output of a real process ----------------------------------------


GATEWAY_KEYS = ["rk-gateway-first-5f2a9c", "rk-gateway-second-7b1d3e"]
UPSTREAM_KEY = "sk-upstream-secret-4c8e1f"
HEADER_TOKEN = "hdr-token-secret-9a7b6c"
DEAD_KEY = "sk-dead-backend-secret-2d4f6a"
WRONG_CLIENT_KEY = "rk-wrong-client-key-0e9d8c"


async def test_no_configured_secret_appears_anywhere_in_the_output(upstream: Any, tmp_path: Path) -> None:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}

    async def error_mid_stream(received: Received, writer: Writer) -> None:
        await writer.send(stream_response(sse_body([chunk, {"error": {"message": f"bad key {UPSTREAM_KEY}"}}], done=False)))

    upstream.add(
        "POST", "/v1/chat/completions",
        (WIRE / "llamacpp__post_v1_chat_completions.response.wire").read_bytes(),
        (WIRE / "llamacpp__post_v1_chat_completions_stream.response.wire").read_bytes(),
        http_response(401, {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "code": "invalid_api_key"}}),
        error_mid_stream,
        http_response(500, {"error": {"message": f"internal: header was {HEADER_TOKEN}"}}),
        stream_response(sse_body([chunk], done=False)),
    )
    config = {
        "server": {"api_keys": GATEWAY_KEYS, "log_level": "debug", "log_prompts": True},
        "backends": {
            "up": {"type": "openai", "url": upstream.url + "/v1", "api_key": UPSTREAM_KEY, "headers": {"X-Custom-Auth": f"Bearer {HEADER_TOKEN}"}},
            "dead": {"type": "openai", "url": f"http://127.0.0.1:{free_port()}/v1", "api_key": DEAD_KEY},
        },
        "models": [{"name": "up", "backend": "up", "model": "x"}, {"name": "dead", "backend": "dead", "model": "x"}],
    }
    async with rosetta_process(config, tmp_path) as running:
        chat = running.base_url + "/chat/completions"
        first, second = GATEWAY_KEYS
        pasted = [{"role": "user", "content": f"my key is {first} and {UPSTREAM_KEY}"}]
        outcomes = [
            await post(chat, {"model": "up", "messages": USER}, first),
            await post(chat, {"model": "up", "messages": USER, "stream": True}, second),
            await post(chat, {"model": "up", "messages": USER}, first),  # upstream 401 naming its key
            await post(chat, {"model": "up", "messages": pasted, "stream": True}, first),  # error mid-stream
            await post(chat, {"model": "up", "messages": USER}, second),  # upstream 500
            await post(chat, {"model": "up", "messages": USER, "stream": True}, first),  # cut mid-stream
            await post(chat, {"model": "dead", "messages": USER}, first),  # refused
            await post(chat, {"model": first, "messages": USER}, first),  # unknown model named like a key
            await post(chat, {"model": "up", "messages": USER}, WRONG_CLIENT_KEY),
            await post(chat, {"model": "up", "messages": USER}),
        ]
        statuses = [status for status, _, _ in outcomes]
        assert statuses == [200, 200, 401, 200, 502, 200, 502, 404, 401, 401]
        # the secrets did flow through the process
        sent = upstream.requests("/v1/chat/completions")
        assert sent[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert sent[0].headers["x-custom-auth"] == f"Bearer {HEADER_TOKEN}"
    output = running.text()
    for secret in [*GATEWAY_KEYS, UPSTREAM_KEY, HEADER_TOKEN, DEAD_KEY, WRONG_CLIENT_KEY]:
        assert secret not in output, f"{secret} is in the log output"
    assert MASK in output  # there was something to mask: the pasted keys, the upstream's echo
    logged = requests_logged(output)
    assert len(logged) == 8  # every request past the gateway key check
    assert {line["request_id"] for line in logged} >= {h["x-request-id"] for s, h, _ in outcomes if s != 401 and "x-request-id" in h}
    for line in output.splitlines():
        assert line.startswith("{") or line.startswith("Rosetta "), f"not a structured line: {line!r}"
