"""The ``kobold`` translator against real KoboldCpp 1.76 bytes and real SillyTavern requests.

Transcripts in tests/transcripts/kobold/ are copies of ../shared/captures/koboldcpp/ (the
``.request.http`` / ``.response.wire`` / ``.response.body`` of each capture) and of the
SillyTavern requests to KoboldCpp and KoboldAI Classic (``tc_koboldcpp_*``, ``kai_*``, ``ui_*``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

import orjson
import pytest

from proxy.decoders import decode_all
from translators.base import Backend, Frame, Framing, Upstream
from translators.errors import ContextLengthExceeded, InvalidRequest, Unsupported, UpstreamError
from translators.events import Event, Finish, TextDelta, Usage
from translators.kobold import Kobold, genkey_for
from translators.request import Request
from translators.stops import StopCutter, cut_text

HERE = Path(__file__).parent / "transcripts" / "kobold"
URL = "http://127.0.0.1:5001"
CHATML = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PIECES = (1, 2, 7, 4096)


# --- helpers ----------------------------------------------------------------------------------
def body_of(name: str) -> bytes:
    """The de-chunked body of a capture."""
    return (HERE / f"{name}.response.body").read_bytes()


def status_of(name: str) -> int:
    """The status code in a capture's wire bytes."""
    return int((HERE / f"{name}.response.wire").read_bytes().split(b" ", 2)[1])


def request_json(name: str) -> Any:
    """The JSON body of a capture's request."""
    return orjson.loads((HERE / f"{name}.request.http").read_bytes().split(b"\r\n\r\n", 1)[1])


def sillytavern(name: str, path: str) -> dict[str, Any]:
    """The body of the first request to ``path`` in a SillyTavern capture."""
    for line in (HERE / f"{name}.jsonl").read_text().splitlines():
        entry = orjson.loads(line)
        if entry["path"] == path:
            return dict(entry["body_json"])
    raise LookupError(path)


def openai_request(body: dict[str, Any], *, rid: str = "cmpl-test0001", **kw: Any) -> Request:
    """A completion Request the way the pipeline builds it from an OpenAI body."""
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    fields: dict[str, Any] = dict(
        id=rid,
        operation="completion",
        model="smol",
        upstream_model="koboldcpp",
        body=body,
        stream=bool(body.get("stream")),
        prompt=body.get("prompt"),
        stop=stops,
        max_tokens=body.get("max_tokens", body.get("max_completion_tokens")),
        n=body.get("n") or 1,
    )
    fields.update(kw)
    return Request(**fields)


def translator(**options: Any) -> Kobold:
    return Kobold(Backend(name="kcpp", type="kobold", url=URL, options=options))


async def frames_of(raw: bytes, piece: int | None) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "sse", piece):
        yield frame


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


class FakeResponse:
    def __init__(self, status: int, body: bytes, piece: int | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}
        self.body = body
        self.piece = piece
        self.closed = False

    async def read(self) -> bytes:
        return self.body

    async def frames(self, framing: Framing) -> AsyncIterator[Frame]:
        for frame in decode_all(self.body, framing, self.piece):
            yield frame

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """Answers by path from a queue per path (the last answer repeats); records what was sent."""

    def __init__(self, routes: dict[str, list[tuple[int, bytes]]], piece: int | None = None) -> None:
        self.routes = routes
        self.piece = piece
        self.sent: list[Upstream] = []
        self.hold: dict[str, asyncio.Event] = {}

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        path = urlsplit(upstream.url).path
        if path in self.hold:
            await self.hold[path].wait()
        queue = self.routes.get(path)
        if not queue:
            return FakeResponse(404, body_of("get_unknown_path"))
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return FakeResponse(status, body, self.piece)

    def paths(self) -> list[str]:
        return [urlsplit(u.url).path for u in self.sent]

    async def sleep(self, seconds: float) -> None:
        return None

    def now(self) -> float:
        return 0.0


def capture(name: str) -> tuple[int, bytes]:
    return status_of(name), body_of(name)


def tokencount(value: int) -> tuple[int, bytes]:
    """A tokencount answer in the captured shape ({"value", "ids"}) with a chosen count."""
    return 200, orjson.dumps({"value": value, "ids": list(range(value))})


KOBOLDCPP = {
    "/api/extra/version": [capture("get_api_extra_version")],
    "/api/extra/true_max_context_length": [capture("get_api_extra_true_max_context_length")],
    "/api/extra/abort": [capture("post_api_extra_abort")],
}


# --- stop cutting -----------------------------------------------------------------------------
def test_stop_cutter_holds_back_a_possible_stop_and_releases_it() -> None:
    cutter = StopCutter(["</s>", "\nUser:"])
    assert cutter.feed("Hello <") == "Hello "
    assert cutter.feed("/") == ""
    assert cutter.feed("b> and\nU") == "</b> and"
    assert cutter.feed("ser") == ""
    assert cutter.feed(": hi") == ""
    assert cutter.stopped and cutter.stop == "\nUser:"
    assert cutter.flush() == ""


def test_cut_text_earliest_stop_wins() -> None:
    assert cut_text("a STOP b END", ["END", "STOP"]) == ("a ", "STOP")
    assert cut_text("nothing here", ["END"]) == ("nothing here", None)


# --- requests ---------------------------------------------------------------------------------
def test_openai_request_becomes_the_captured_native_stream_request() -> None:
    kobold = translator(server="koboldcpp")
    req = openai_request(
        {"model": "smol", "prompt": CHATML, "max_tokens": 16, "temperature": 0.7, "top_k": 1, "seed": 42,
         "stop": ["<|im_end|>"], "stream": True}
    )
    expected = request_json("post_api_extra_generate_stream_short")
    # Rosetta cuts stop strings itself (it must see which stop ended the text) and keys the job
    expected.update(trim_stop=False, genkey="KCPPcmpltest0001")
    assert kobold.build_request(req) == Upstream(
        "POST", URL + "/api/extra/generate/stream", {"Content-Type": "application/json"}, expected, True
    )


def test_non_stream_and_password_and_api_suffix() -> None:
    kobold = Kobold(Backend(name="k", type="kobold", url=URL + "/api/", api_key="kcpp-secret", options={"server": "koboldcpp"}))
    req = openai_request({"model": "smol", "prompt": "The sky is", "max_tokens": 8})
    assert kobold.build_request(req) == Upstream(
        "POST",
        URL + "/api/v1/generate",
        {"Content-Type": "application/json", "Authorization": "Bearer kcpp-secret"},
        {"prompt": "The sky is", "max_length": 8, "trim_stop": False, "genkey": "KCPPcmpltest0001"},
        False,
    )


def test_genkey_is_unique_per_request_and_deterministic() -> None:
    a, b = openai_request({"prompt": "x"}, rid="chatcmpl-aa11"), openai_request({"prompt": "x"}, rid="chatcmpl-bb22")
    assert genkey_for(a) == "KCPPchatcmplaa11" == genkey_for(a)
    assert genkey_for(a) != genkey_for(b)


def test_sillytavern_kobold_settings_give_what_sillytavern_sends_natively() -> None:
    """A client sending SillyTavern's Kobold settings through Rosetta produces the body ST sends
    to KoboldCpp itself (kai_nonstream), plus Rosetta's genkey and trim_stop, with the server's
    context size in place of the client's guess."""
    kai = sillytavern("kai_nonstream", "/api/v1/generate")
    kobold = translator(server="koboldcpp")
    kobold.context = 2048
    upstream = kobold.build_request(openai_request({"model": "smol", **kai}))
    assert upstream.json == {**kai, "max_context_length": 2048, "trim_stop": False, "genkey": "KCPPcmpltest0001"}
    assert upstream.warnings == ()


def test_sillytavern_text_completion_body_maps_every_alias_once() -> None:
    """ST's text-completion body for KoboldCpp carries ~60 keys with duplicates (max_tokens /
    n_predict / num_predict, rep_pen / repetition_penalty / repeat_penalty, stop /
    stopping_strings, dry_sequence_breakers as a JSON string...)."""
    st = sillytavern("tc_koboldcpp_stream", "/v1/completions")
    kobold = translator(server="koboldcpp")
    upstream = kobold.build_request(openai_request(st))
    assert upstream.url == URL + "/api/extra/generate/stream" and upstream.stream
    assert upstream.json == {
        "prompt": st["prompt"], "max_length": 300, "temperature": 0.7, "top_p": 0.5, "typical": 1,
        "sampler_seed": -1, "min_p": 0, "rep_pen": 1.2, "presence_penalty": 0, "top_k": 40,
        "smoothing_factor": 0, "smoothing_curve": 1, "dry_allowed_length": 2, "dry_multiplier": 0,
        "dry_base": 1.75, "dry_sequence_breakers": ["\n", ":", '"', "*"], "dry_penalty_last_n": 0,
        "stop_sequence": ["\nUser:"], "ban_eos_token": False, "top_a": 0, "tfs": 1, "mirostat": 0,
        "mirostat_tau": 5, "mirostat_eta": 0.1, "custom_token_bans": "", "banned_tokens": [],
        "xtc_threshold": 0.1, "xtc_probability": 0, "rep_pen_range": 0, "guidance_scale": 1,
        "negative_prompt": "", "grammar": "", "rep_pen_slope": 1, "sampler_order": [6, 0, 1, 3, 4, 2, 5],
        # SillyTavern extras KoboldCpp ignores: forwarded, as for any unknown field
        "min_tokens": 0, "add_bos_token": True, "max_tokens_second": 0, "skip_special_tokens": True,
        "trim_stop": False, "genkey": "KCPPcmpltest0001",
    }
    assert upstream.warnings == ()


def test_every_sampler_is_reachable_and_openai_names_map() -> None:
    body = {
        "prompt": "p", "max_completion_tokens": 10, "top_p": 0.9, "frequency_penalty": 0.5, "seed": 7,
        "logit_bias": {"42": -100}, "top_a": 0.2, "nsigma": 1.0, "mirostat_mode": 2, "mirostat_tau": 4,
        "dynatemp_range": 0.5, "dynatemp_exponent": 1.2, "grammar_string": "root ::= \"a\"",
        "banned_strings": ["slop"], "xtc_threshold": 0.15, "xtc_probability": 0.5, "memory": "M:",
        "dry_sequence_breakers": ["\n"], "ignore_eos": True, "render_special": True,
    }
    upstream = translator(server="koboldcpp").build_request(openai_request(body))
    assert upstream.json == {
        "prompt": "p", "max_length": 10, "top_p": 0.9, "presence_penalty": 0.5, "sampler_seed": 7,
        "logit_bias": {"42": -100}, "top_a": 0.2, "nsigma": 1.0, "mirostat": 2, "mirostat_tau": 4,
        "dynatemp_range": 0.5, "dynatemp_exponent": 1.2, "grammar": "root ::= \"a\"",
        "banned_tokens": ["slop"], "xtc_threshold": 0.15, "xtc_probability": 0.5, "memory": "M:",
        "dry_sequence_breakers": ["\n"], "ban_eos_token": True, "render_special": True,
        "trim_stop": False, "genkey": "KCPPcmpltest0001",
    }
    assert upstream.warnings == ("frequency_penalty was sent as presence_penalty (KoboldCpp has only the latter)",)


def test_alias_conflicts_native_name_wins_whatever_the_order() -> None:
    body = {"prompt": "p", "repetition_penalty": 1.3, "rep_pen": 1.1, "typical_p": 0.9}
    upstream = translator(server="koboldcpp").build_request(openai_request(body))
    assert upstream.json["rep_pen"] == 1.1 and upstream.json["typical"] == 0.9
    assert "repetition_penalty" not in upstream.json and "typical_p" not in upstream.json
    assert upstream.warnings == ("repetition_penalty=1.3 was not sent: rep_pen=1.1 sets the same thing",)


def test_bad_values_are_400s_naming_the_param() -> None:
    kobold = translator(server="koboldcpp")
    with pytest.raises(InvalidRequest) as bad:
        kobold.build_request(openai_request({"prompt": "p", "dry_sequence_breakers": "[not json"}))
    assert bad.value.param == "dry_sequence_breakers"
    with pytest.raises(Unsupported) as tools:
        kobold.build_request(openai_request({"prompt": "p", "tools": [{"type": "function", "function": {"name": "f"}}]}))
    assert tools.value.param == "tools"


def test_n_above_one_is_rejected_on_koboldcpp() -> None:
    # KoboldCpp 1.76 answers n=2 with a single result (post_api_v1_generate_multi_results_n2)
    assert len(orjson.loads(body_of("post_api_v1_generate_multi_results_n2"))["results"]) == 1
    with pytest.raises(Unsupported) as err:
        translator(server="koboldcpp").build_request(openai_request({"prompt": "The sky is", "n": 2}))
    assert err.value.param == "n"


def test_united_gets_only_its_whitelist_and_its_limits() -> None:
    kai = sillytavern("ui_kobold_classic_generate", "/api/v1/generate")
    kobold = translator(server="koboldai")
    kobold.context = 8192
    req = openai_request({"model": "smol", **kai, "max_tokens": 700, "n": 2, "stream": True}, n=2)
    upstream = kobold.build_request(req)
    expected = {k: v for k, v in kai.items() if k not in ("min_p", "mirostat", "mirostat_eta", "mirostat_tau", "grammar")}
    assert upstream == Upstream(
        "POST", URL + "/api/v1/generate", {"Content-Type": "application/json"},
        {**expected, "max_length": 512, "n": 2}, False,
    )
    assert upstream.warnings == (
        "max_tokens=700 is above this backend's maximum 512; sent 512",
        "KoboldAI United rejects these fields, not sent: grammar, min_p, mirostat, mirostat_eta, mirostat_tau",
    )


# --- whole answers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, body, expected",
    [
        ("post_api_v1_generate_minimal", {"prompt": "The sky is", "max_tokens": 8},
         [TextDelta(" your best friend, but one of the"), Finish("length")]),
        ("post_api_v1_generate_chatml_stop", {"prompt": CHATML, "max_tokens": 40, "stop": ["<|im_end|>", "\n\n"]},
         [TextDelta("The capital of France is Paris."), Finish("stop")]),
        # 1.76 with trim_stop false returns the stop string and says "length": Rosetta cuts, says stop
        ("post_api_v1_generate_no_trim_stop", {"prompt": CHATML, "max_tokens": 40, "stop": ["Paris"]},
         [TextDelta("The capital of France is "), Finish("stop")]),
        # a server that trimmed the stop string itself says "length" and leaves no trace of it:
        # why Rosetta sends trim_stop false (exchange corrects this one with token counts)
        ("post_api_v1_generate_stopseq_trim", {"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"]},
         [TextDelta("The capital of France is"), Finish("length")]),
        ("post_api_v1_generate_multi_results_n2", {"prompt": "The sky is", "max_tokens": 6},
         [TextDelta(" a place of endless possibilities,"), Finish("length")]),
    ],
)
def test_parse_response(name: str, body: dict[str, Any], expected: list[Event]) -> None:
    events = list(translator(server="koboldcpp").parse_response(orjson.loads(body_of(name)), openai_request(body)))
    assert events == expected


def test_newer_servers_counts_are_used() -> None:
    # the newer result shape (local.md §2.2: text, finish_reason, prompt_tokens, completion_tokens)
    body: dict[str, Any] = {"results": [{"text": "Hi.", "tool_calls": [], "finish_reason": "length", "logprobs": None,
                         "prompt_tokens": 12, "completion_tokens": 3}]}
    events = list(translator().parse_response(body, openai_request({"prompt": "p", "max_tokens": 40}, max_tokens=40)))
    assert events == [TextDelta("Hi."), Finish("stop"), Usage(12, 3)]


# --- streams ----------------------------------------------------------------------------------
STREAMS = [
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": ["<|im_end|>"]},
     [TextDelta(t) for t in ("The", " capital", " of", " France", " is", " Paris", ".")] + [Finish("stop")]),
    # every event but the last says finish_reason "null" (a string); the last says "length"
    ("post_api_extra_generate_stream_len", {"prompt": "Count: 1, 2, 3,", "max_tokens": 24},
     [TextDelta(t) for t in (" ", "4", ",", " ", "5", ",", " ", "6", ",", " ", "7", ",", " ", "8", ",",
                             " ", "9", ",", " ", "1", "0", ",", " ", "1")]
     + [Finish("length")]),
    # several tokens in one event; the server trimmed " Paris" and says "length"
    ("post_api_extra_generate_stream_stopseq", {"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"]},
     [TextDelta("The capital of France is"), Finish("length")]),
    # a stop string across event boundaries (" France" | " is" | " Paris") is never sent half-way
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": ["ce is Pa"]},
     [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), TextDelta(" Fran"), Finish("stop")]),
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": [" Paris"]},
     [TextDelta(t) for t in ("The", " capital", " of", " France", " is")] + [Finish("stop")]),
]


@pytest.mark.parametrize("piece", PIECES)
@pytest.mark.parametrize("name, body, expected", STREAMS)
async def test_parse_stream(name: str, body: dict[str, Any], expected: list[Event], piece: int) -> None:
    kobold = translator(server="koboldcpp")
    events = await collect(kobold.parse_stream(frames_of(body_of(name), piece), openai_request(body)))
    assert events == expected


async def test_stream_without_final_event_is_cut_mid_stream() -> None:
    raw = body_of("post_api_extra_generate_stream_short")
    cut = raw[: raw.index(b'{"token": " Paris"')].rsplit(b"event:", 1)[0]
    with pytest.raises(UpstreamError) as err:
        await collect(translator().parse_stream(frames_of(cut, None), openai_request({"prompt": CHATML})))
    assert err.value.kind == "cut_mid_stream"


def test_error_bodies() -> None:
    kobold = translator()
    err = kobold.parse_error(status_of("post_api_v1_generate_bad_json"), body_of("post_api_v1_generate_bad_json"), {})
    assert (err.status, err.code, err.message) == (502, "bad_input", "upstream kobold returned HTTP 500: Error parsing input.")
    busy = b'{"detail": {"msg": "Server is busy; please try again later.", "type": "service_unavailable"}}'
    assert kobold.parse_error(503, busy, {}).status == 503  # local.md §1.3 / §2.1
    united = b'{"detail": {"max_length": ["Must be greater than or equal to 1 and less than or equal to 512."]}}'
    assert kobold.parse_error(422, united, {}).message.endswith(
        "max_length: Must be greater than or equal to 1 and less than or equal to 512."
    )


# --- prepare, exchange ------------------------------------------------------------------------
async def test_prepare_detects_koboldcpp_and_fits_the_context() -> None:
    transport = FakeTransport({**KOBOLDCPP, "/api/extra/tokencount": [capture("post_api_extra_tokencount_chatml")]})
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML}))
    assert (kobold.kind, kobold.version, kobold.context, req.max_tokens) == ("koboldcpp", "1.76", 2048, 512)
    assert kobold.build_request(req).json["max_context_length"] == 2048
    await kobold.prepare(transport, openai_request({"prompt": CHATML}))  # version and context are kept
    assert transport.paths().count("/api/extra/version") == 1
    assert transport.paths().count("/api/extra/true_max_context_length") == 1
    with pytest.raises(ContextLengthExceeded) as err:  # 16 prompt tokens + 2040 > 2048
        await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 2040}))
    assert err.value.status == 400 and err.value.code == "context_length_exceeded" and err.value.param == "prompt"
    assert transport.sent[-1].json == {"prompt": CHATML}


async def test_prepare_on_united_asks_its_config_and_counts_nothing() -> None:
    transport = FakeTransport({"/api/v1/config/max_context_length": [capture("get_api_v1_config_max_context_length")]})
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "p", "max_tokens": 100}))
    assert (kobold.kind, kobold.context, req.max_tokens) == ("koboldai", 2048, 100)
    assert transport.paths() == ["/api/extra/version", "/api/v1/config/max_context_length"]


@pytest.mark.parametrize("piece", PIECES)
async def test_exchange_counts_usage_and_corrects_kcpp_length(piece: int) -> None:
    """The server trimmed " Paris" and said "length"; 5 tokens of 40 were produced: "stop"."""
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_stopseq")],
         "/api/extra/tokencount": [capture("post_api_extra_tokencount_chatml")] * 2 + [tokencount(21)]},
        piece,
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"], "stream": True}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta("The capital of France is"), Finish("stop"), Usage(16, 5)]
    assert [u.json for u in transport.sent if u.url.endswith("tokencount")][-1] == {"prompt": CHATML + "The capital of France is"}
    assert "/api/extra/abort" not in transport.paths()


async def test_exchange_length_when_max_length_tokens_were_produced() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_minimal")],
         "/api/extra/tokencount": [tokencount(4), tokencount(4), tokencount(12)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "The sky is", "max_tokens": 8}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta(" your best friend, but one of the"), Finish("length"), Usage(4, 8)]


async def test_a_stop_string_the_server_did_not_stop_at_aborts_the_generation() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_short")],
         "/api/extra/tokencount": [tokencount(16), tokencount(16), tokencount(20)]},
    )
    kobold = translator()
    stops = [f"<stop{i}>" for i in range(32)] + [" France"]  # KoboldCpp takes 32
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 16, "stop": stops, "stream": True}))
    upstream = kobold.build_request(req)
    assert upstream.json["stop_sequence"] == stops[:32]
    assert upstream.warnings == ("the server takes 32 stop strings; Rosetta cuts at the others",)
    events = await collect(kobold.exchange(transport, upstream, req))
    assert events == [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), Finish("stop"), Usage(16, 4)]
    aborts = [u.json for u in transport.sent if u.url.endswith("/api/extra/abort")]
    assert aborts == [{"genkey": "KCPPcmpltest0001"}]


async def test_a_stop_string_the_server_knows_needs_no_abort() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_short")],
         "/api/extra/tokencount": [tokencount(16), tokencount(16), tokencount(20)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 16, "stop": [" France"], "stream": True}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), Finish("stop"), Usage(16, 4)]
    assert "/api/extra/abort" not in transport.paths()


async def test_client_gone_mid_stream_aborts_with_the_genkey() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_aborted")],
         "/api/extra/tokencount": [tokencount(9)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "Write a very long story about a dragon.\n", "max_tokens": 512, "stream": True}, rid="chatcmpl-xyz9"))
    events: Any = kobold.exchange(transport, kobold.build_request(req), req)
    assert await events.__anext__() == TextDelta("\n")
    assert "/api/extra/abort" not in transport.paths()
    await events.aclose()  # what the proxy does when the client disconnects
    assert transport.sent[-1] == Upstream("POST", URL + "/api/extra/abort", {"Content-Type": "application/json"}, {"genkey": "KCPPchatcmplxyz9"})


async def test_client_gone_while_a_blocking_generate_runs_aborts_it() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_aborted")], "/api/extra/tokencount": [tokencount(9)]}
    )
    transport.hold["/api/v1/generate"] = asyncio.Event()  # the answer comes only when generation ends
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "Write a very long story about a cat.\n", "max_tokens": 512}))
    events = kobold.exchange(transport, kobold.build_request(req), req)
    task = asyncio.ensure_future(events.__anext__())
    while transport.paths()[-1] != "/api/v1/generate":
        await asyncio.sleep(0)
    task.cancel()  # the proxy's handler task is cancelled on disconnect
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.sent[-1].json == {"genkey": "KCPPcmpltest0001"} and transport.paths()[-1] == "/api/extra/abort"


async def test_upstream_error_status_is_raised_and_nothing_is_aborted() -> None:
    transport = FakeTransport({**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_bad_json")]})
    kobold = translator(server="koboldcpp")
    req = openai_request({"prompt": "p", "max_tokens": 4})
    with pytest.raises(UpstreamError) as err:
        await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert err.value.code == "bad_input"
    assert transport.paths() == ["/api/v1/generate"]


async def test_list_models() -> None:
    transport = FakeTransport({"/api/v1/model": [capture("get_api_v1_model")]})
    assert await translator().list_models(transport) == ["koboldcpp/SmolLM2-135M-Instruct.Q4_1"]
    united_empty = FakeTransport({"/api/v1/model": [(200, b'{"result": "ReadOnly"}')]})  # local.md §1.1
    assert await translator().list_models(united_empty) == []


# --- end to end: the openai client → Rosetta → a fake KoboldCpp replaying captured bytes -----
def wire(name: str) -> bytes:
    """A capture's exact response bytes (HTTP/1.0, closed by the server)."""
    return (HERE / f"{name}.response.wire").read_bytes()


def wire_tokencount(value: int) -> bytes:
    head, _ = wire("post_api_extra_tokencount").split(b"\r\n\r\n", 1)
    body = tokencount(value)[1]
    head = head.replace(b"content-length: 59", b"content-length: %d" % len(body))
    return head + b"\r\n\r\n" + body


def app_config(url: str, **model: Any) -> dict[str, Any]:
    return {
        "backends": {"kcpp": {"type": "kobold", "url": url}},
        "models": [{"name": "smol", "backend": "kcpp", "model": "koboldcpp/SmolLM2-135M-Instruct.Q4_1", **model}],
    }


def fake_koboldcpp(upstream: Any) -> None:
    upstream.add("GET", "/api/extra/version", wire("get_api_extra_version"))
    upstream.add("GET", "/api/extra/true_max_context_length", wire("get_api_extra_true_max_context_length"))


def openai_client(running: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_chat_stream_through_the_chatml_template(upstream: Any, rosetta: Any) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire("post_api_extra_tokencount_chatml"),
                 wire("post_api_extra_tokencount_chatml"), wire_tokencount(23))
    upstream.add("POST", "/api/extra/generate/stream", wire("post_api_extra_generate_stream_short"))
    running = await rosetta(app_config(upstream.url, template="chatml"))
    stream = await openai_client(running).chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0.7, seed=42, stream=True, stream_options={"include_usage": True},
        extra_body={"top_k": 1},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (16, 7)
    sent = upstream.requests("/api/extra/generate/stream")[0].json
    genkey = sent.pop("genkey")
    assert genkey.startswith("KCPP") and len(genkey) > 8
    expected = request_json("post_api_extra_generate_stream_short")
    # the captured request, plus the stop strings the ChatML template implies
    assert sent == {**expected, "stop_sequence": ["<|im_end|>", "<|im_start|>"], "trim_stop": False, "max_context_length": 2048}
    assert not upstream.requests("/api/extra/abort")


async def test_e2e_completion_answer_with_exact_usage(upstream: Any, rosetta: Any) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire_tokencount(4), wire_tokencount(4), wire_tokencount(12))
    upstream.add("POST", "/api/v1/generate", wire("post_api_v1_generate_minimal"))
    running = await rosetta(app_config(upstream.url))
    answer = await openai_client(running).completions.create(model="smol", prompt="The sky is", max_tokens=8)
    assert answer.choices[0].text == " your best friend, but one of the"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 8)
    sent = upstream.requests("/api/v1/generate")[0].json
    assert {k: v for k, v in sent.items() if k != "genkey"} == {
        **request_json("post_api_v1_generate_minimal"), "max_context_length": 2048, "trim_stop": False,
    }


@pytest.mark.parametrize("operation", ["chat", "completion"])
async def test_e2e_client_disconnect_aborts_with_the_genkey_within_100ms(upstream: Any, rosetta: Any, operation: str) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire_tokencount(9))
    head, events = wire("post_api_extra_generate_stream_aborted").split(b"\r\n\r\n", 1)
    first_three = b"".join(part + b"\n\n" for part in events.split(b"\n\n")[:3])
    aborted = asyncio.Event()

    async def generating(received: Any, writer: Any) -> None:
        await writer.send(head + b"\r\n\r\n" + first_three)
        await writer.wait_closed_by_peer(5)

    async def abort(received: Any, writer: Any) -> None:
        await writer.send(wire("post_api_extra_abort"))
        aborted.set()

    upstream.add("POST", "/api/extra/generate/stream", generating)
    upstream.add("POST", "/api/extra/abort", abort)
    running = await rosetta(app_config(upstream.url, template="chatml"))
    client = openai_client(running)
    if operation == "chat":
        stream = await client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
            max_tokens=512, stream=True,
        )
    else:
        stream = await client.completions.create(
            model="smol", prompt="Write a very long story about a dragon.\n", max_tokens=512, stream=True
        )
    async for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.content if operation == "chat" else chunk.choices[0].text):
            break
    gone = asyncio.get_running_loop().time()
    await stream.close()
    await asyncio.wait_for(aborted.wait(), 5)
    call = upstream.requests("/api/extra/abort")[0]
    assert call.json == {"genkey": upstream.requests("/api/extra/generate/stream")[0].json["genkey"]}
    assert call.at - gone < 0.1


async def test_a_failing_count_leaves_the_answer_and_the_servers_finish() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_minimal")],
         "/api/extra/tokencount": [tokencount(4), (400, b'{"value": -1}')]},  # local.md §2.2: error → 400 {"value": -1}
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "The sky is", "max_tokens": 8}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta(" your best friend, but one of the"), Finish("length")]


def test_stream_option_off_generates_whole_answers() -> None:
    upstream = translator(server="koboldcpp", stream=False).build_request(openai_request({"prompt": "p", "stream": True}))
    assert (upstream.url, upstream.stream) == (URL + "/api/v1/generate", False)
    # KoboldAI United has no stream at all
    upstream = translator(server="koboldai").build_request(openai_request({"prompt": "p", "stream": True}))
    assert (upstream.url, upstream.stream) == (URL + "/api/v1/generate", False)


async def test_detection_is_not_fooled_by_a_failing_server() -> None:
    transport = FakeTransport({"/api/extra/version": [(503, b'{"detail": {"msg": "Server is busy; please try again later.", "type": "service_unavailable"}}'),
                                                      capture("get_api_extra_version")]})
    kobold = translator()
    with pytest.raises(UpstreamError):
        await kobold.detect(transport)
    assert kobold.kind is None
    assert await kobold.detect(transport) == "koboldcpp"
