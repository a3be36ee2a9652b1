"""Instruct templates: the shipped formats, prefill, empty replies, names, tools, and SillyTavern's
conversations (several system messages, the assistant first).

Expected prompts are written out from the sources each shipped template cites (model chat
templates, llama.cpp's test-chat-template.cpp expectations, Mistral's cookbook, SillyTavern's
presets), not from the renderer. The mixin that uses the templates: tests/test_textgen.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from templates_helpers import CONVERSATION, EXPECTED, sillytavern_messages

from translators.templates import TemplateError, load_template, names, render_chat


# --- shipped templates ------------------------------------------------------------------------
def test_every_required_format_is_shipped() -> None:
    assert names() == sorted(EXPECTED)


def test_data_files_are_named_after_their_template_and_aliases_are_unique() -> None:
    data = Path(__file__).parent.parent / "translators" / "templates" / "data"
    assert sorted(p.stem for p in data.glob("*.yaml")) == names()
    spellings = [s for name in names() for s in (name, *load_template(name).aliases)]
    assert len(spellings) == len(set(spellings))
    for spelling in spellings:
        assert load_template(spelling).name in names()
    for path in data.glob("*.yaml"):
        assert path.read_text(encoding="utf-8").startswith("#"), f"{path.name} must say where it was verified"
        assert "Verified against" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixed_conversation_renders_exactly(name: str) -> None:
    prompt, stop = EXPECTED[name]
    assert render_chat(CONVERSATION, load_template(name)) == render_chat(CONVERSATION, load_template(name.upper()))
    rendered = render_chat(CONVERSATION, load_template(name))
    assert rendered.prompt == prompt
    assert rendered.stop == stop
    assert rendered.warnings == ()


def test_names_and_aliases_are_case_and_separator_insensitive() -> None:
    assert load_template("ChatML").name == "chatml"
    assert load_template("Llama 3").name == "llama3"
    assert load_template("gemma_3").name == "gemma"
    assert load_template("Mistral-V7").name == "mistral-v7"


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        load_template("llama-9000")
    message = str(info.value)
    assert "unknown template 'llama-9000'" in message
    for name in names():
        assert name in message
    with pytest.raises(TemplateError, match="no template file"):
        load_template("/nowhere/template.json")


# --- prefill, empty replies, names, tools ---------------------------------------------------
def test_trailing_assistant_message_is_continued() -> None:
    prefill = CONVERSATION + [{"role": "assistant", "content": "Why did the"}]
    assert render_chat(prefill, load_template("chatml")).prompt == (
        EXPECTED["chatml"][0] + "Why did the"
    )
    assert render_chat(prefill, load_template("llama3")).prompt == EXPECTED["llama3"][0] + "Why did the"
    # Mistral writes the space after [/INST] itself when it starts a reply; a continued reply has it.
    assert render_chat(prefill, load_template("mistral-v3")).prompt == EXPECTED["mistral-v3"][0] + " Why did the"
    assert render_chat(prefill, load_template("vicuna")).prompt == EXPECTED["vicuna"][0] + " Why did the"
    assert render_chat(prefill, load_template("gemma")).prompt.endswith(
        "Tell me a joke.<end_of_turn>\n<start_of_turn>model\nWhy did the"
    )


def test_empty_trailing_assistant_message_just_starts_the_reply() -> None:
    for content in ("", None, "   "):
        messages = CONVERSATION + [{"role": "assistant", "content": content}]
        assert render_chat(messages, load_template("chatml")).prompt == EXPECTED["chatml"][0]


def test_content_parts_and_developer_role() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "there"}]},
    ]
    assert render_chat(messages, load_template("chatml")).prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )


def test_names_are_written_unless_the_template_says_none() -> None:
    messages = [{"role": "user", "content": "Hi", "name": "Bob"}, {"role": "assistant", "content": "Yo", "name": "Ann"}]
    assert render_chat(messages, load_template("chatml")).prompt == (
        "<|im_start|>user\nBob: Hi<|im_end|>\n<|im_start|>assistant\nAnn: Yo"
    )
    assert render_chat(messages, load_template("alpaca")).prompt == "### Instruction:\nHi\n\n### Response:\nYo"


def test_tool_traffic() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "17C, rain"},
    ]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    # ChatML has a tool role.
    assert render_chat(messages, load_template("chatml")).prompt == (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        f"<|im_start|>assistant\n{call}<|im_end|>\n"
        "<|im_start|>tool\n17C, rain<|im_end|>\n<|im_start|>assistant\n"
    )
    # Mistral has none here: the result is a user turn labelled with the function it answers.
    assert render_chat(messages, load_template("mistral-v7")).prompt == (
        f"[INST] Weather in Paris?[/INST] {call}</s>[INST] [Tool result: get_weather]\n17C, rain[/INST]"
    )


def test_default_system_prompt_when_none_is_given() -> None:
    hi = [{"role": "user", "content": "Hi"}]
    # Qwen2.5's template writes this system turn itself.
    assert render_chat(hi, load_template("qwen")).prompt == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # FastChat vicuna_v1.1 default system message.
    assert render_chat(hi, load_template("vicuna")).prompt == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: Hi ASSISTANT:"
    )


# --- SillyTavern's conversations: several system messages, the assistant first ------------------
def test_assistant_first_conversation_from_sillytavern() -> None:
    messages = sillytavern_messages()
    assert [m["role"] for m in messages] == ["system", "system", "assistant", "user"]
    main = "Write Seraphina's next reply in a fictional chat between Seraphina and User."
    assert render_chat(messages, load_template("chatml")).prompt == (
        f"<|im_start|>system\n{main}<|im_end|>\n<|im_start|>system\n[Start a new Chat]<|im_end|>\n"
        "<|im_start|>assistant\n*Seraphina smiles.* Welcome, traveller.<|im_end|>\n"
        "<|im_start|>user\nHi Seraphina, where am I?<|im_end|>\n<|im_start|>assistant\n"
    )
    # No system role: the system text keeps its place, as a user turn before the greeting.
    assert render_chat(messages, load_template("gemma")).prompt == (
        f"<start_of_turn>user\n{main}\n\n[Start a new Chat]<end_of_turn>\n"
        "<start_of_turn>model\n*Seraphina smiles.* Welcome, traveller.<end_of_turn>\n"
        "<start_of_turn>user\nHi Seraphina, where am I?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render_chat(messages, load_template("llama2")).prompt == (
        f"[INST] <<SYS>>\n{main}\n\n[Start a new Chat]\n<</SYS>> [/INST] *Seraphina smiles.* Welcome, traveller. </s>"
        "<s>[INST] Hi Seraphina, where am I? [/INST]"
    )
    # Mistral v3 puts the system prompt on the last user message.
    assert render_chat(messages, load_template("mistral-v3")).prompt == (
        " *Seraphina smiles.* Welcome, traveller.</s>"
        f"[INST] {main}\n\n[Start a new Chat]\n\nHi Seraphina, where am I?[/INST]"
    )
    assert render_chat(messages, load_template("deepseek")).prompt == (
        f"{main}\n\n[Start a new Chat]<｜Assistant｜>*Seraphina smiles.* Welcome, traveller.<｜end▁of▁sentence｜>"
        "<｜User｜>Hi Seraphina, where am I?<｜Assistant｜>"
    )


def test_system_messages_anywhere() -> None:
    messages = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Joke?"},
        {"role": "system", "content": "[Be short]"},
    ]
    assert render_chat(messages, load_template("llama3")).prompt == (
        "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\nAnswer in French.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nJoke?<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\n[Be short]<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # Gemma: a system message joins the next user turn; one at the end is a user turn of its own.
    assert render_chat(messages, load_template("gemma")).prompt == (
        "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nAnswer in French.\n\nJoke?<end_of_turn>\n"
        "<start_of_turn>user\n[Be short]<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render_chat(messages, load_template("mistral-v3-tekken")).prompt == (
        "[INST]Hello![/INST]Hi!</s>[INST]Answer in French.\n\n[Be short]\n\nJoke?[/INST]"
    )
    assert render_chat(messages, load_template("deepseek")).prompt == (
        "Answer in French.\n\n[Be short]<｜User｜>Hello!<｜Assistant｜>Hi!<｜end▁of▁sentence｜><｜User｜>Joke?<｜Assistant｜>"
    )
