"""The text-completion mixin: chat → prompt with the model's template (named, or the
backend's own for ``auto``, or the fallback), stop strings, per-request warnings, the
context-size check, and the config options."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from translators.base import Backend, Translator, Transport
from translators.errors import ContextLengthExceeded
from translators.request import Request
from translators.textgen import TemplatedRequest, TemplatedText, TextModelOptions, TextOptions, template_warnings

DATA = Path(__file__).parent / "transcripts" / "templates"

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]
# The conversation in ChatML, Llama 3 and Alpaca (sources cited in tests/templates_helpers.py).
CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
    "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nTell me a joke.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
LLAMA3 = (
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
ALPACA = (
    "You are a helpful assistant.\n\n### Instruction:\nHello!\n\n### Response:\nHi! How can I help?\n\n"
    "### Instruction:\nTell me a joke.\n\n### Response:\n"
)
# A template in the style of Llama 2's and Mistral's: roles must alternate after one system message.
ALTERNATING_JINJA = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% else %}"
    "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)


def smollm2_props() -> dict[str, Any]:
    """llama.cpp ``GET /props`` for SmolLM2 (captured; copied into the test data)."""
    return dict(json.loads((DATA / "llamacpp-smollm2_get_props.json").read_text(encoding="utf-8")))


def sillytavern_messages() -> list[dict[str, Any]]:
    """SillyTavern's chat-completion messages: system, system, the greeting, the user."""
    line = (DATA / "sillytavern_cc_custom_nonstream.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return list(json.loads(line)["body_json"]["messages"])


class FakeText(TemplatedText, Translator):
    """A text backend whose model template and context are set by the test."""

    name = "faketext"
    own_template: tuple[str, str, str] | None = None
    limit: int | None = None

    async def chat_template(self, transport: Transport) -> tuple[str, str, str] | None:
        self.asked = getattr(self, "asked", 0) + 1
        return self.own_template

    async def context_limit(self, transport: Transport) -> int | None:
        return self.limit

    async def count_tokens(self, transport: Transport, text: str) -> int | None:
        return len(text.split()) if self.limit is not None else None


def fake(**options: Any) -> FakeText:
    return FakeText(Backend(name="local", type="faketext", url="http://127.0.0.1:5001", options=options))


def chat(template: str | None = None, **kw: Any) -> Request:
    values: dict[str, Any] = dict(
        id="req-1", operation="chat", model="m", upstream_model="m", body={}, messages=tuple(CONVERSATION),
        stop=("\nUser:",), options=TextModelOptions(template=template),
    )
    values.update(kw)
    return Request(**values)


TRANSPORT: Any = object()  # the fake backend never sends anything


async def test_prepare_renders_with_the_model_template_and_merges_stops() -> None:
    translator = fake(template="llama3")
    prepared = await translator.prepare(TRANSPORT, chat(template="chatml", stop=("\nUser:", "<|im_end|>")))
    assert isinstance(prepared, TemplatedRequest)
    assert prepared.prompt == CHATML
    assert prepared.stop == ("\nUser:", "<|im_end|>", "<|im_start|>")
    assert translator.template_warnings(prepared) == ()
    # The backend's template applies when the model names none.
    assert (await translator.prepare(TRANSPORT, chat())).prompt == LLAMA3


async def test_prepare_auto_uses_the_backend_template_once() -> None:
    props = smollm2_props()
    translator = fake()
    translator.own_template = (props["chat_template"], props["bos_token"], props["eos_token"])
    first = await translator.prepare(TRANSPORT, chat())
    second = await translator.prepare(TRANSPORT, chat(messages=tuple(CONVERSATION[1:2])))
    assert first.prompt == CHATML
    assert (second.prompt or "").startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert translator.asked == 1


async def test_prepare_auto_without_a_template_falls_back_with_a_warning() -> None:
    translator = fake(template_fallback="alpaca")
    prepared = await translator.prepare(TRANSPORT, chat())
    assert prepared.prompt == ALPACA
    (warning,) = template_warnings(prepared)
    assert "no chat template" in warning and "'alpaca'" in warning


async def test_prepare_auto_with_a_broken_or_unsafe_template_falls_back() -> None:
    broken = fake()
    broken.own_template = ("{% if %}", "", "")
    prepared = await broken.prepare(TRANSPORT, chat())
    assert prepared.prompt == CHATML and "does not parse" in template_warnings(prepared)[0]
    unsafe = fake()
    unsafe.own_template = ("{{ ''.__class__ }}", "", "")
    prepared = await unsafe.prepare(TRANSPORT, chat())
    assert prepared.prompt == CHATML and "unsafe" in template_warnings(prepared)[0]


async def test_warnings_belong_to_their_request() -> None:
    translator = fake()
    translator.own_template = (ALTERNATING_JINJA, "<s>", "</s>")
    strict = await translator.prepare(TRANSPORT, chat(messages=tuple(sillytavern_messages())))
    plain = await translator.prepare(TRANSPORT, chat())
    assert len(template_warnings(strict)) == 1
    assert template_warnings(plain) == ()


async def test_completion_requests_pass_unchanged() -> None:
    req = Request(id="r", operation="completion", model="m", upstream_model="m", body={"prompt": "Once"}, prompt="Once")
    assert await fake().prepare(TRANSPORT, req) is req


async def test_context_check() -> None:
    translator = fake(template="chatml")
    translator.limit = 30
    prepared = await translator.prepare(TRANSPORT, chat(max_tokens=10))
    assert len((prepared.prompt or "").split()) == 20  # the fake backend counts words
    await translator.check_context(TRANSPORT, prepared)  # 20 + 10 fit in 30
    with pytest.raises(ContextLengthExceeded) as info:
        await translator.check_context(TRANSPORT, await translator.prepare(TRANSPORT, chat(max_tokens=11)))
    assert info.value.param == "messages" and info.value.status == 400
    assert "maximum context length is 30 tokens" in info.value.message and "(20 in the messages, 11" in info.value.message
    completion = Request(id="r", operation="completion", model="m", upstream_model="m",
                         body={"prompt": ["one two", "one two three four five"]}, max_tokens=26)
    with pytest.raises(ContextLengthExceeded) as info:
        await translator.check_context(TRANSPORT, completion)
    assert info.value.param == "prompt"
    translator.limit = None  # unknown context: nothing to check
    await translator.check_context(TRANSPORT, await translator.prepare(TRANSPORT, chat(max_tokens=10_000)))


def test_options_validate_template_names() -> None:
    assert TextOptions().template is None and TextOptions().template_fallback == "chatml"
    assert TextOptions(template="AUTO").template == "AUTO"
    assert TextModelOptions(template="gemma3").template == "gemma3"
    with pytest.raises(ValidationError, match="unknown template"):
        TextOptions(template="nope")
    with pytest.raises(ValidationError, match="unknown template"):
        TextModelOptions(template="nope")
    with pytest.raises(ValidationError):
        TextOptions(template_fallback="auto")
    with pytest.raises(ValidationError):
        TextOptions(templates="chatml")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        fake(template="nope")


async def test_translators_extend_the_options_and_warnings_survive_replace() -> None:
    class KoboldishOptions(TextOptions):
        genkey_prefix: str = "R"

    class Koboldish(FakeText):
        Options = KoboldishOptions

    translator = Koboldish(Backend(name="k", type="faketext", url="http://127.0.0.1:5001",
                                   options={"template_fallback": "alpaca", "genkey_prefix": "X"}))
    assert translator.options.genkey_prefix == "X"
    prepared = await translator.prepare(TRANSPORT, chat())
    moved = dataclasses.replace(prepared, max_tokens=5)
    assert isinstance(moved, TemplatedRequest) and moved.max_tokens == 5
    assert template_warnings(moved) == template_warnings(prepared) != ()


async def test_concurrent_requests_get_their_own_warnings() -> None:
    translator = fake()
    translator.own_template = (ALTERNATING_JINJA, "<s>", "</s>")
    strict, plain = await asyncio.gather(
        translator.prepare(TRANSPORT, chat(messages=tuple(sillytavern_messages()))),
        translator.prepare(TRANSPORT, chat()),
    )
    assert len(template_warnings(strict)) == 1 and template_warnings(plain) == ()
    # (This template leaves the system message out.)
    assert plain.prompt == "user: Hello!\nassistant: Hi! How can I help?\nuser: Tell me a joke.\nassistant:"
