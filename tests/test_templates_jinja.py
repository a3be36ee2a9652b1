"""Instruct templates: the model's own Jinja template in a sandbox.

Expected prompts are written out from the sources each shipped template cites (model chat
templates, llama.cpp's test-chat-template.cpp expectations, Mistral's cookbook, SillyTavern's
presets), not from the renderer. The mixin that uses the templates: tests/test_textgen.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from templates_helpers import CONVERSATION, DATA, EXPECTED, LLAMA3_JINJA, SYSTEM, sillytavern_messages

from translators.errors import InvalidRequest
from translators.templates import Template, TemplateError, load_template, render_chat, template_from_jinja

# DeepSeek-V3 chat_template core (system messages joined and written after bos_token).
DEEPSEEK_V3_JINJA = (
    "{% set ns = namespace(system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<｜Assistant｜>' }}{%- endif %}"
)

# Gemma 3 chat_template (google/gemma-3-*-it tokenizer_config.json).
GEMMA3_JINJA = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


# --- the model's own Jinja template -------------------------------------------------------------
def smollm2_props() -> dict[str, Any]:
    return dict(json.loads((DATA / "llamacpp-smollm2_get_props.json").read_text(encoding="utf-8")))


def test_jinja_from_llamacpp_props() -> None:
    props = smollm2_props()
    template = template_from_jinja(props["chat_template"], bos_token=props["bos_token"], eos_token=props["eos_token"])
    rendered = render_chat(CONVERSATION, template)
    # SmolLM2's bos_token is "<|im_start|>", but its template never writes bos_token: nothing is cut.
    assert rendered.prompt == EXPECTED["chatml"][0]
    assert rendered.stop == ("<|im_end|>",)
    # Without a system message the template writes its own.
    assert render_chat(CONVERSATION[1:2], template).prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )


def test_jinja_llama3_official_template() -> None:
    template = template_from_jinja(LLAMA3_JINJA, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert render_chat(CONVERSATION, template).prompt == EXPECTED["llama3"][0]
    kept = template_from_jinja(LLAMA3_JINJA, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", keep_bos=True)
    assert render_chat(CONVERSATION, kept).prompt == "<|begin_of_text|>" + EXPECTED["llama3"][0]
    # Prefill: the assistant turn is continued, its <|eot_id|> not written.
    prefill = CONVERSATION + [{"role": "assistant", "content": "Why did the"}]
    assert render_chat(prefill, template).prompt == EXPECTED["llama3"][0] + "Why did the"


def test_jinja_namespace_template_with_several_system_messages() -> None:
    template = template_from_jinja(DEEPSEEK_V3_JINJA, bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>")
    messages = [SYSTEM, {"role": "system", "content": "Be short."}] + CONVERSATION[1:]
    assert render_chat(messages, template).prompt == (
        "You are a helpful assistant.\n\nBe short.<｜User｜>Hello!<｜Assistant｜>Hi! How can I help?<｜end▁of▁sentence｜>"
        "<｜User｜>Tell me a joke.<｜Assistant｜>"
    )


def test_jinja_strict_template_gets_sillytavern_conversation_reshaped() -> None:
    template = template_from_jinja(GEMMA3_JINJA, bos_token="<bos>", eos_token="<eos>")
    assert render_chat(CONVERSATION, template).prompt == EXPECTED["gemma"][0]
    rendered = render_chat(sillytavern_messages(), template)
    assert rendered.prompt == (
        "<start_of_turn>user\nWrite Seraphina's next reply in a fictional chat between Seraphina and User.\n\n"
        "[Start a new Chat]\n\n<end_of_turn>\n<start_of_turn>model\n*Seraphina smiles.* Welcome, traveller.<end_of_turn>\n"
        "<start_of_turn>user\nHi Seraphina, where am I?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert len(rendered.warnings) == 1 and "Conversation roles must alternate" in rendered.warnings[0]


def test_jinja_rejection_that_reshaping_cannot_fix_is_a_400() -> None:
    template = template_from_jinja("{{ raise_exception('No way') }}")
    with pytest.raises(InvalidRequest) as info:
        render_chat(CONVERSATION, template)
    assert info.value.param == "messages" and "No way" in info.value.message


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for a in range(99999) %}{% for b in range(99999) %}xxxxxxxx{% endfor %}{% endfor %}",
    ],
)
def test_sandbox_refuses_unsafe_templates(source: str) -> None:
    with pytest.raises(TemplateError):
        render_chat(CONVERSATION, template_from_jinja(source))


def test_broken_jinja_does_not_load() -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        template_from_jinja("{% for message in messages %}{{ message.content }")


def test_template_is_a_value() -> None:
    assert load_template("chatml") == load_template("chatml")
    assert isinstance(load_template("chatml"), Template)
    with pytest.raises(AttributeError):
        load_template("chatml").user_prefix = "x"  # type: ignore[misc]
