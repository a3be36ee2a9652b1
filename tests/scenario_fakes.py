"""The backends of the end-to-end scenarios, each faked with its own captured bytes.

The fake upstream replays only bytes captured from real servers or copied from the providers'
documentation (tests/transcripts/<backend>/, see each folder's SOURCES/README). Scripted faults
(a status, a hang, a cut) reuse the backend's captured error bodies and stream bytes; only the
status line or the cut point is chosen by the test. ``native_*`` read back what Rosetta sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from harness import TRANSCRIPTS, Received, ReplayUpstream, Writer, http_response, stream_response

Install = Callable[[ReplayUpstream], None]


# --- transcripts --------------------------------------------------------------------------------
def raw(path: str) -> bytes:
    """The bytes of a transcript file."""
    return (TRANSCRIPTS / path).read_bytes()


def sillytavern(name: str) -> dict[str, Any]:
    """The body SillyTavern 1.12.6 sent (tests/transcripts/clients/<name>.jsonl, first line)."""
    line = raw(f"clients/{name}.jsonl").splitlines()[0]
    return dict(orjson.loads(line)["body_json"])


def horde_wire(name: str) -> bytes:
    """A recorded AI Horde answer (status, headers, exact body) as HTTP bytes."""
    data = json.loads(raw(f"horde/{name}.json"))
    headers = {k: v for k, v in data["headers"].items() if k.lower() not in ("content-length", "content-type")}
    kind = data["headers"].get("Content-Type", "application/json")
    return http_response(data["status"], data["body_raw"], headers={**headers, "Connection": "close"}, content_type=kind)


def kobold_tokencount(value: int) -> bytes:
    """KoboldCpp's captured /api/extra/tokencount answer with a chosen count (same shape)."""
    head, _ = raw("kobold/post_api_extra_tokencount.response.wire").split(b"\r\n\r\n", 1)
    body = orjson.dumps({"value": value, "ids": list(range(value))})
    return head.replace(b"content-length: 59", b"content-length: %d" % len(body)) + b"\r\n\r\n" + body


def by_stream(whole: bytes, streamed: bytes) -> Callable[[Received, Writer], Awaitable[None]]:
    """A handler answering with ``streamed`` when the request asked to stream, else ``whole``."""

    async def answer(received: Received, writer: Writer) -> None:
        await writer.send(streamed if (received.json or {}).get("stream") else whole)

    return answer


def with_status(wire: bytes, status: int, reason: str = "X", extra: bytes = b"") -> bytes:
    """A captured response with another status line (a scripted fault; the body stays captured)."""
    head, body = wire.split(b"\r\n\r\n", 1)
    first, rest = head.split(b"\r\n", 1)
    version = first.split(b" ", 1)[0]
    return version + b" %d %s\r\n" % (status, reason.encode()) + rest + extra + b"\r\n\r\n" + body


# --- the backends, each faked with its own captured bytes ------------------------------------------
HORDE_MODEL = "koboldcpp/SmolLM2-135M"
HORDE_JOB = "4ccd956e-bfc1-40e9-9d9e-dfb82dd06ea1"
CLAUDE_STREAM = stream_response(raw("claude/sdk_basic_response.sse"))
CLAUDE_WHOLE = http_response(200, raw("claude/spec_message.json"))


@dataclass(frozen=True)
class Fake:
    """One backend type as a user configures it, and how its fake upstream answers."""

    type: str
    model: str
    options: dict[str, Any]
    install: Install
    generate: str  # the path of the generation call
    text: tuple[str, str]  # the answer text (non-stream, stream) the captures give
    source: str  # x-rosetta-usage-source of a non-stream answer
    path_of: Callable[[bool, str], str] = lambda stream, op: ""
    url_suffix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def backend(self, url: str, **options: Any) -> dict[str, Any]:
        return {"type": self.type, "url": url + self.url_suffix, **self.options, **options}


def install_kobold(up: ReplayUpstream) -> None:
    up.add("GET", "/api/extra/version", raw("kobold/get_api_extra_version.response.wire"))
    up.add("GET", "/api/extra/true_max_context_length", raw("kobold/get_api_extra_true_max_context_length.response.wire"))
    # the prompt (prepare), the prompt again and prompt + answer (exact usage after the answer)
    up.add("POST", "/api/extra/tokencount", kobold_tokencount(40), kobold_tokencount(40), kobold_tokencount(47))
    up.add("POST", "/api/extra/generate/stream", raw("kobold/post_api_extra_generate_stream_short.response.wire"))
    up.add("POST", "/api/v1/generate", raw("kobold/post_api_v1_generate_minimal.response.wire"))
    up.add("POST", "/api/extra/abort", raw("kobold/post_api_extra_abort.response.wire"))


def install_llamacpp(up: ReplayUpstream) -> None:
    up.add("GET", "/props", raw("llamacpp/get_props.response.wire"))
    up.add("POST", "/tokenize", raw("llamacpp/post_tokenize_add_special.response.wire"))
    up.add("POST", "/completion", by_stream(raw("llamacpp/post_completion.response.wire"),
                                            raw("llamacpp/post_completion_stream.response.wire")))


def install_ollama(up: ReplayUpstream) -> None:
    up.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    ndjson = "application/x-ndjson"
    up.add("POST", "/api/chat", by_stream(http_response(200, raw("ollama/chat_nonstream.json"), headers={"Connection": "close"}),
                                          stream_response(raw("ollama/chat_stream.ndjson"), content_type=ndjson)))
    up.add("POST", "/api/generate", by_stream(http_response(200, raw("ollama/generate_nonstream.json"), headers={"Connection": "close"}),
                                              stream_response(raw("ollama/generate_stream.ndjson"), content_type=ndjson)))


def install_ooba(up: ReplayUpstream) -> None:
    up.add("POST", "/v1/internal/chat-prompt", http_response(200, raw("ooba/chat_prompt.json"), headers={"Connection": "close"}))
    up.add("POST", "/v1/internal/token-count", raw("ooba/post_v1_internal_token_count.response.wire"))
    up.add("POST", "/v1/chat/completions", by_stream(raw("ooba/post_v1_chat_completions.response.wire"),
                                                     raw("ooba/post_v1_chat_completions_stream.response.wire")))
    up.add("POST", "/v1/completions", by_stream(raw("ooba/post_v1_completions.response.wire"),
                                                raw("ooba/post_v1_completions_stream.response.wire")))
    up.add("POST", "/v1/internal/stop-generation", raw("ooba/post_v1_internal_stop_generation.response.wire"))


def install_horde(up: ReplayUpstream) -> None:
    up.add("GET", "/api/v2/workers", horde_wire("42_workers_text"))
    up.add("POST", "/api/v2/generate/text/async", horde_wire("20_submit_async_user"))
    up.add("GET", f"/api/v2/generate/text/status/{HORDE_JOB}", horde_wire("22_status_3_done"))
    up.add("DELETE", f"/api/v2/generate/text/status/{HORDE_JOB}", horde_wire("24_cancel_after_done"))


def install_tabby(up: ReplayUpstream) -> None:  # completions only: no chat answer is recorded
    up.add("POST", "/v1/completions", by_stream(http_response(200, raw("tabby/completion.json")),
                                                stream_response(raw("tabby/completion_stream.sse"))))


def install_mancer(up: ReplayUpstream) -> None:  # completions only (OpenAI's documented shapes)
    up.add("POST", "/oai/v1/completions", by_stream(http_response(200, raw("mancer/completion.json")),
                                                    stream_response(raw("mancer/completion_stream.sse"))))


def install_claude(up: ReplayUpstream) -> None:
    up.add("POST", "/v1/messages", by_stream(CLAUDE_WHOLE, CLAUDE_STREAM))


HORDE_ECHO = "[echo:koboldcpp/SmolLM2-135M] The quick brown fox jumps over the lazy dog. Then the fox"
FAKES: dict[str, Fake] = {
    "kobold": Fake("kobold", "koboldcpp/SmolLM2-135M", {"template": "chatml"}, install_kobold,
                   "", (" your best friend, but one of the", "The capital of France is Paris."), "provider",
                   lambda stream, op: "/api/extra/generate/stream" if stream else "/api/v1/generate"),
    "llamacpp": Fake("llamacpp", "gemma-3-270m", {}, install_llamacpp, "/completion",
                     (" the capital of the country of France. It is the largest city in France. It is located in the department of the",
                      " the capital of the country of France. It is the largest"), "provider"),
    "ollama": Fake("ollama", "llama3.2", {}, install_ollama, "",
                   ("Hello! How are you today?", "The"), "provider",
                   lambda stream, op: "/api/chat" if op == "chat" else "/api/generate"),
    "ooba": Fake("ooba", "gemma-3-270m-q4_k_m.gguf", {"context_length": 2048}, install_ooba, "",
                 ("What is the capital of France?\nWhat is the capital of France?", "What is the capital of France?"),
                 "provider", lambda stream, op: "/v1/chat/completions" if op == "chat" else "/v1/completions"),
    "horde": Fake("horde", HORDE_MODEL, {"template": "chatml", "poll_interval": 1, "max_poll_interval": 1}, install_horde,
                  "/api/v2/generate/text/async", (HORDE_ECHO, HORDE_ECHO), "estimated", url_suffix="/api"),
    "tabby": Fake("tabby", "Llama-3.2-1B-Instruct-exl3", {"api_key": "backend-secret-key"}, install_tabby, "/v1/completions",
                  (" Paris. It is the capital", " Paris. It is the capital"), "provider"),
    "mancer": Fake("mancer", "mytholite", {"api_key": "backend-secret-key"}, install_mancer, "/oai/v1/completions",
                   ("\n\nThis is indeed a test", "This is a test"), "provider"),
    "claude": Fake("claude", "claude-3-5-sonnet-20241022", {"api_key": "sk-ant-scenario-secret"}, install_claude,
                   "/v1/messages", ("Hi! My name is Claude.", "Hello there!"), "provider"),
}
TEXT_BACKENDS = ("kobold", "llamacpp", "ollama", "ooba", "horde")
COMPLETION_ONLY = ("tabby", "mancer")  # recorded completion answers only


def generate_path(fake: Fake, stream: bool, operation: str = "chat") -> str:
    return fake.generate or fake.path_of(stream, operation)


def config_for(kind: str, url: str, *, backend: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    fake = FAKES[kind]
    return {
        "backends": {"be": fake.backend(url, **(backend or {}))},
        "models": [{"name": "rp", "backend": "be", "model": fake.model, **model}],
    }


# --- what Rosetta sent: the text the model reads, the limit, the stops, a sampler -------------------
def native_text(kind: str, sent: dict[str, Any]) -> str:
    """Everything of the conversation the model will read, as one string."""
    if kind in ("kobold", "llamacpp", "horde"):
        return str(sent["prompt"])
    if kind == "claude":
        system = "".join(b["text"] for b in sent.get("system") or ())
        return system + "".join(b.get("text", "") for m in sent["messages"] for b in m["content"])
    if "prompt" in sent:
        return str(sent["prompt"])
    return "".join(
        m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
        for m in sent["messages"]
    )


def native_limit(kind: str, sent: dict[str, Any]) -> Any:
    return {
        "kobold": lambda: sent.get("max_length"),
        "llamacpp": lambda: sent.get("n_predict"),
        "ollama": lambda: sent.get("options", {}).get("num_predict"),
        "ooba": lambda: sent.get("max_tokens"),
        "tabby": lambda: sent.get("max_tokens"),
        "mancer": lambda: sent.get("max_tokens"),
        "horde": lambda: sent["params"].get("max_length"),
        "claude": lambda: sent.get("max_tokens"),
    }[kind]()


def native_stops(kind: str, sent: dict[str, Any]) -> list[str]:
    return list({
        "kobold": lambda: sent.get("stop_sequence"),
        "llamacpp": lambda: sent.get("stop"),
        "ollama": lambda: sent.get("options", {}).get("stop"),
        "ooba": lambda: sent.get("stop"),
        "tabby": lambda: sent.get("stop"),
        "mancer": lambda: sent.get("stop"),
        "horde": lambda: sent["params"].get("stop_sequence"),
        "claude": lambda: sent.get("stop_sequences"),
    }[kind]() or ())


def native_repetition_penalty(kind: str, sent: dict[str, Any]) -> Any:
    return {
        "kobold": lambda: sent.get("rep_pen"),
        "llamacpp": lambda: sent.get("repeat_penalty"),
        "ollama": lambda: sent.get("options", {}).get("repeat_penalty"),
        "ooba": lambda: sent.get("repetition_penalty"),
        "horde": lambda: sent["params"].get("rep_pen"),
        "claude": lambda: sent.get("repetition_penalty"),
    }[kind]()


# --- what SillyTavern's captured Chat Completion requests hold ------------------------------------
ST_REQUESTS = ("cc_custom_nonstream", "cc_custom_stream", "cc_custom_include_exclude")
ST_SYSTEMS = ("Write Seraphina's next reply in a fictional chat between Seraphina and User.", "[Start a new Chat]")
ST_GREETING = "*Seraphina smiles.* Welcome, traveller."
ST_USER = "Hi Seraphina, where am I?"
