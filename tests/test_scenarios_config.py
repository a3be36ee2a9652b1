"""End-to-end scenarios: a config with per-model params defaults, per-model translator options and
server options.

The real app (``run_rosetta`` through the ``rosetta`` fixture) against fake upstreams that replay
captured bytes (scenario_fakes); answers checked with the openai SDK's own models (scenario_helpers).
"""

from __future__ import annotations

from typing import Any

from harness import ReplayUpstream
from scenario_fakes import FAKES, HORDE_MODEL, ST_SYSTEMS, config_for, kobold_tokencount, sillytavern
from scenario_helpers import check_answer, check_stream, client, post_json, post_stream


# --- a config with per-model params defaults and per-model translator options ---------------------
async def test_kobold_model_template_and_params_defaults(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["kobold"].install(upstream)
    config = config_for("kobold", upstream.url, template="alpaca",
                        params={"max_tokens": 120, "temperature": 0.3, "rep_pen": 1.15, "stop": ["###"]})
    config["models"].append({"name": "plain", "backend": "be", "model": "x"})  # the backend's chatml
    running = await rosetta(config)
    # langchain sends explicit nulls: a null must not erase a route default
    body = {"model": "rp", "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "temperature": 0.9, "max_tokens": None, "stop": None, "top_p": None, "n": None, "stream": False}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests("/api/v1/generate")
    assert sent.json["prompt"] == "Be terse.\n\n### Instruction:\nHi\n\n### Response:\n"
    assert (sent.json["max_length"], sent.json["temperature"], sent.json["rep_pen"]) == (120, 0.9, 1.15)
    assert sent.json["stop_sequence"] == ["###", "\n### Instruction:", "\n### Response:"]
    # the other model on the same backend keeps the backend's template and no defaults
    upstream.routes[("POST", "/api/extra/tokencount")] = [kobold_tokencount(10)]
    status, _, data = await post_json(running, "/chat/completions", {**body, "model": "plain"})
    assert status == 200, data
    sent = upstream.requests("/api/v1/generate")[-1]
    assert sent.json["prompt"] == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "rep_pen" not in sent.json and sent.json["temperature"] == 0.9


async def test_claude_model_prefill_and_params_defaults(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url, prefill="*Seraphina ", include_prefill=True,
                                       params={"max_tokens": 100, "temperature": 0.5}))
    body = sillytavern("cc_custom_stream")
    body.update(model="rp", max_tokens=None, temperature=None)  # nulls keep the route's values
    streamed = check_stream(await post_stream(running, "/chat/completions", {**body, "stream_options": {"include_usage": True}}),
                            model="rp", include_usage=True)
    assert streamed.text == "*SeraphinaHello there!"  # the prefill (trailing space stripped), then the answer
    [sent] = upstream.requests("/v1/messages")
    assert (sent.json["max_tokens"], sent.json["temperature"]) == (100, 0.5)
    assert sent.json["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "*Seraphina"}]}
    assert sent.json["messages"][0]["role"] == "user"  # SillyTavern's assistant-first chat got a user turn first
    assert [b["text"] for b in sent.json["system"]] == list(ST_SYSTEMS)
    # a client value beats the default
    status, _, data = await post_json(running, "/chat/completions", {**body, "max_tokens": 42, "stream": False})
    assert status == 200 and check_answer(data, model="rp")["choices"][0]["message"]["content"] == "*SeraphinaHi! My name is Claude."
    assert upstream.requests("/v1/messages")[-1].json["max_tokens"] == 42


async def test_llamacpp_model_template_overrides_the_models_own(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["llamacpp"].install(upstream)
    config = config_for("llamacpp", upstream.url, template="alpaca", params={"top_k": 20, "min_p": 0.1})
    config["models"].append({"name": "auto", "backend": "be", "model": "gemma-3-270m"})
    running = await rosetta(config)
    messages = [{"role": "user", "content": "Hi"}]
    for name in ("rp", "auto"):
        status, _, data = await post_json(running, "/chat/completions", {"model": name, "messages": messages, "max_tokens": 8})
        assert status == 200, data
    alpaca, auto = (r.json for r in upstream.requests("/completion"))
    assert alpaca["prompt"] == "### Instruction:\nHi\n\n### Response:\n"
    assert alpaca["stop"] == ["\n### Instruction:", "\n### Response:"]
    assert (alpaca["top_k"], alpaca["min_p"]) == (20, 0.1)
    # the model's own template from /props (the captured model's is ChatML)
    assert auto["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "top_k" not in auto


async def test_ollama_model_options(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["ollama"].install(upstream)
    running = await rosetta(config_for("ollama", upstream.url, num_ctx=4096, keep_alive="10m", raw=False,
                                       params={"top_k": 30, "repeat_penalty": 1.2}))
    status, _, data = await post_json(running, "/completions", {"model": "rp", "prompt": "Why is the sky blue?", "max_tokens": 20})
    assert status == 200 and check_answer(data, model="rp", operation="completion")
    [sent] = upstream.requests("/api/generate")
    assert sent.json["raw"] is False and sent.json["keep_alive"] == "10m"
    assert sent.json["options"] == {"top_k": 30, "repeat_penalty": 1.2, "num_predict": 20, "num_ctx": 4096}
    assert not upstream.requests("/api/show")  # num_ctx came from the model's options


async def test_horde_model_options(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["horde"].install(upstream)
    running = await rosetta(config_for("horde", upstream.url, models=[HORDE_MODEL, "koboldcpp/other"], max_context_length=2048,
                                       template="alpaca", params={"max_tokens": 64}))
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and check_answer(data, model="rp")
    [sent] = upstream.requests("/api/v2/generate/text/async")
    assert sent.json["models"] == [HORDE_MODEL, "koboldcpp/other"]
    assert sent.json["params"]["max_context_length"] == 2048 and sent.json["params"]["max_length"] == 64
    assert sent.json["prompt"] == "### Instruction:\nHi\n\n### Response:\n"
    assert headers["x-rosetta-horde-worker"] == "lab-capture-worker"


# --- server options -------------------------------------------------------------------------------
async def test_keep_alive_comments_while_the_backend_thinks(rosetta: Any) -> None:
    running = await rosetta({
        "server": {"keepalive_seconds": 0.05},
        "backends": {"m": {"type": "mock", "tokens_per_second": 0, "first_token_delay": 0.3}},
        "models": [{"name": "mock", "backend": "m", "model": "echo"}],
    })
    body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user", "content": "one two three"}],
                            "stream_options": {"include_usage": True}}
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="mock", include_usage=True)
    assert streamed.text == "one two three"
    usage_note = ": x-rosetta-usage-source=estimated"
    assert usage_note in streamed.comments
    keepalives = [c for c in streamed.comments if c != usage_note]
    assert keepalives and all(c == ": keep-alive" for c in keepalives)
    async with client(running) as oa:  # the SDK skips the comments
        stream = await oa.chat.completions.create(model="mock", messages=body["messages"], stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "one two three"
