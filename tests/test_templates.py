"""Instruct templates: shipped formats, prefill, SillyTavern's conversations and presets, and
the model's own Jinja template in a sandbox (the mixin that uses them: tests/test_textgen.py).

Expected prompts are written out from the sources each shipped template cites (model chat
templates, llama.cpp's test-chat-template.cpp expectations, Mistral's cookbook, SillyTavern's
presets), not from the renderer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from translators.errors import InvalidRequest
from translators.templates import (
    Template,
    TemplateError,
    load_template,
    names,
    render_chat,
    template_from_jinja,
    to_sillytavern,
)

DATA = Path(__file__).parent / "transcripts" / "templates"
ST_PRESETS = DATA / "sillytavern"

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATION = [
    SYSTEM,
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]

# name → (prompt, stop strings). Each prompt follows the cited source for that format, with the
# opening BOS left out (the backend's tokenizer adds it) except where the format's tokenizer does
# not add it (GLM-4's "[gMASK]<sop>").
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    # llama.cpp LLM_CHAT_TEMPLATE_CHATML / test-chat-template.cpp OpenHermes expectation.
    "chatml": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n"
        "<|im_start|>user\nTell me a joke.<|im_end|>\n"
        "<|im_start|>assistant\n",
        ("<|im_end|>", "<|im_start|>"),
    ),
    # Qwen2.5 chat_template (same ChatML turns when a system message is given).
    "qwen": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n"
        "<|im_start|>user\nTell me a joke.<|im_end|>\n"
        "<|im_start|>assistant\n",
        ("<|im_end|>", "<|endoftext|>", "<|im_start|>"),
    ),
    # Meta-Llama-3-8B-Instruct chat_template (bos_token dropped).
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|eot_id|>", "<|eom_id|>", "<|start_header_id|>"),
    ),
    # Llama-2-chat chat_template; huggingface.js "llama" test target minus the opening <s>.
    "llama2": (
        "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi! How can I help? </s>"
        "<s>[INST] Tell me a joke. [/INST]",
        ("</s>", "[INST]"),
    ),
    # Mistral cookbook V1; llama.cpp "mistralai 'v1' template with a system prompt" expectation.
    "mistral-v1": (
        " [INST] You are a helpful assistant.\n\nHello! [/INST] Hi! How can I help?</s> [INST] Tell me a joke. [/INST]",
        ("</s>", "[INST]"),
    ),
    # Mistral cookbook V3 (system prompt on the last user message); llama.cpp Large-2407 Jinja expectation.
    "mistral-v3": (
        "[INST] Hello![/INST] Hi! How can I help?</s>[INST] You are a helpful assistant.\n\nTell me a joke.[/INST]",
        ("</s>", "[INST]"),
    ),
    # Mistral cookbook V3-Tekken; llama.cpp Nemo-2407 Jinja expectation.
    "mistral-v3-tekken": (
        "[INST]Hello![/INST]Hi! How can I help?</s>[INST]You are a helpful assistant.\n\nTell me a joke.[/INST]",
        ("</s>", "[INST]"),
    ),
    # llama.cpp "mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)" expectation.
    "mistral-v7": (
        "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT][INST] Hello![/INST] Hi! How can I help?</s>"
        "[INST] Tell me a joke.[/INST]",
        ("</s>", "[INST]"),
    ),
    # llama.cpp LLM_CHAT_TEMPLATE_MISTRAL_V7_TEKKEN (V7 without the spaces).
    "mistral-v7-tekken": (
        "[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST]Hello![/INST]Hi! How can I help?</s>"
        "[INST]Tell me a joke.[/INST]",
        ("</s>", "[INST]"),
    ),
    # SillyTavern Alpaca.json with wrap (sequence + "\n", suffix "\n\n"); the system text is the preamble.
    "alpaca": (
        "You are a helpful assistant.\n\n### Instruction:\nHello!\n\n### Response:\nHi! How can I help?\n\n"
        "### Instruction:\nTell me a joke.\n\n### Response:\n",
        ("\n### Instruction:", "\n### Response:"),
    ),
    # FastChat vicuna_v1.1: ADD_COLON_TWO, sep " ", sep2 "</s>".
    "vicuna": (
        "You are a helpful assistant. USER: Hello! ASSISTANT: Hi! How can I help?</s>USER: Tell me a joke. ASSISTANT:",
        ("</s>", "USER:"),
    ),
    # SillyTavern Metharme.json (<|system|>, <|user|>, <|model|>, no separators).
    "metharme": (
        "<|system|>You are a helpful assistant.<|user|>Hello!<|model|>Hi! How can I help?<|user|>Tell me a joke.<|model|>",
        ("</s>", "<|user|>", "<|system|>"),
    ),
    # Gemma 3 chat_template: system + "\n\n" opens the first user turn.
    "gemma": (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n"
        "<start_of_turn>model\nHi! How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nTell me a joke.<end_of_turn>\n"
        "<start_of_turn>model\n",
        ("<end_of_turn>", "<start_of_turn>"),
    ),
    # llama.cpp "Phi-3-small" expectation.
    "phi3": (
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n"
        "<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nTell me a joke.<|end|>\n<|assistant|>\n",
        ("<|end|>", "<|user|>", "<|endoftext|>"),
    ),
    # llama.cpp "CohereForAI/c4ai-command-r-plus" expectation.
    "command-r": (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello!<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi! How can I help?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Tell me a joke.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        ("<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>"),
    ),
    # llama.cpp "ChatGLM4" expectation.
    "glm4": (
        "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nHello!<|assistant|>\nHi! How can I help?"
        "<|user|>\nTell me a joke.<|assistant|>\n",
        ("<|endoftext|>", "<|user|>", "<|observation|>"),
    ),
    # DeepSeek-V3 chat_template (system right after BOS, no separator).
    "deepseek": (
        "You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜>Hi! How can I help?<｜end▁of▁sentence｜>"
        "<｜User｜>Tell me a joke.<｜Assistant｜>",
        ("<｜end▁of▁sentence｜>", "<｜User｜>"),
    ),
}

# Official Llama 3 Instruct chat template text (Meta-Llama-3-8B-Instruct tokenizer_config.json;
# also llama.cpp tests/test-chat-template.cpp "Llama-3").
LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

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


def sillytavern_messages() -> list[dict[str, Any]]:
    """What SillyTavern sent in chat-completion mode: two system messages, the greeting as an
    assistant turn, then the user (captured bytes, copied into the test data)."""
    line = (DATA / "sillytavern_cc_custom_nonstream.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return list(json.loads(line)["body_json"]["messages"])


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


# --- our file format --------------------------------------------------------------------------
def test_template_files_in_our_format(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text('user_prefix: "Q: "\nuser_suffix: "\\n"\nassistant_prefix: "A: "\nassistant_suffix: "\\n"\n'
                    'system_suffix: "\\n"\nstop: ["\\nQ:"]\n', encoding="utf-8")
    template = load_template(str(path))
    assert template.name == "mine"
    assert render_chat(CONVERSATION, template).prompt == (
        "You are a helpful assistant.\nQ: Hello!\nA: Hi! How can I help?\nQ: Tell me a joke.\nA: "
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text('user_prefx: "Q: "\n', encoding="utf-8")
    with pytest.raises(TemplateError, match="unknown template keys"):
        load_template(str(bad))
    jinja_file = tmp_path / "model.jinja"
    jinja_file.write_text(LLAMA3_JINJA, encoding="utf-8")
    assert render_chat(CONVERSATION, load_template(str(jinja_file))).prompt == EXPECTED["llama3"][0]


# --- SillyTavern presets ------------------------------------------------------------------------
# Expected renders follow SillyTavern's formatInstructModeChat/getInstructStoppingSequences for
# each preset (wrap: "\n" between sequence and text, empty suffix "\n", stop strings "\n"-led).
ST_EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "ChatML.json": (EXPECTED["chatml"][0],
                    ("\n<|im_end|>", "\n<|im_start|>user", "\n<|im_start|>assistant", "\n<|im_start|>system")),
    "Llama 3 Instruct.json": (EXPECTED["llama3"][0], (
        "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>", "<|start_header_id|>assistant<|end_header_id|>",
        "<|start_header_id|>system<|end_header_id|>")),
    # SillyTavern starts Mistral V7's reply with its output sequence, a space.
    "Mistral V7.json": (
        "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT][INST] Hello![/INST] Hi! How can I help?</s>"
        "[INST] Tell me a joke.[/INST] ",
        ("</s>", "[INST] ", "[SYSTEM_PROMPT] ")),
    "Mistral V7-Tekken.json": (
        "[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST]Hello![/INST] Hi! How can I help?</s>"
        "[INST]Tell me a joke.[/INST] ",
        ("</s>", "[INST]", "[SYSTEM_PROMPT]")),
    # Empty story string prefix: the system prompt opens the chat as it is.
    "DeepSeek-V2.5.json": (EXPECTED["deepseek"][0], ("<｜User｜>", "<｜Assistant｜>")),
    "Alpaca.json": (
        "### Input:\nYou are a helpful assistant.\n\n### Instruction:\nHello!\n\n### Response:\nHi! How can I help?\n\n"
        "### Instruction:\nTell me a joke.\n\n### Response:\n",
        ("\n### Instruction:", "\n### Response:", "\n### Input:")),
    "Metharme.json": (EXPECTED["metharme"][0], ("</s>", "<|user|>", "<|model|>")),
}


@pytest.mark.parametrize("preset", sorted(ST_EXPECTED))
def test_sillytavern_presets_load_and_render(preset: str) -> None:
    template = load_template(str(ST_PRESETS / preset))
    assert template.name == json.loads((ST_PRESETS / preset).read_text(encoding="utf-8"))["name"]
    rendered = render_chat(CONVERSATION, template)
    assert (rendered.prompt, rendered.stop) == ST_EXPECTED[preset]


@pytest.mark.parametrize("preset", sorted(ST_EXPECTED))
def test_sillytavern_preset_round_trips(preset: str, tmp_path: Path) -> None:
    template = load_template(str(ST_PRESETS / preset))
    path = tmp_path / "exported.json"
    path.write_text(json.dumps(to_sillytavern(template)), encoding="utf-8")
    assert load_template(str(path)) == template


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_templates_round_trip_through_sillytavern_export(name: str, tmp_path: Path) -> None:
    template = load_template(name)
    exported = to_sillytavern(template)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(exported, ensure_ascii=False), encoding="utf-8")
    assert load_template(str(path)) == template


# Formats SillyTavern's own keys can say completely (native system role, no BOS to write, no
# default system prompt): their export without our copy still renders the same.
ST_EXPRESSIBLE = ["chatml", "llama3", "mistral-v7-tekken", "phi3", "command-r", "metharme"]


@pytest.mark.parametrize("name", ST_EXPRESSIBLE)
def test_sillytavern_keys_alone_render_the_same(name: str, tmp_path: Path) -> None:
    exported = to_sillytavern(load_template(name))
    del exported["rosetta"]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(exported), encoding="utf-8")
    assert render_chat(CONVERSATION, load_template(str(path))) == render_chat(CONVERSATION, load_template(name))


def test_preset_edited_in_sillytavern_is_read_from_its_keys(tmp_path: Path) -> None:
    exported = to_sillytavern(load_template("chatml"))
    exported["input_sequence"] = "<|im_start|>human\n"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(exported), encoding="utf-8")
    assert "<|im_start|>human\nHello!" in render_chat(CONVERSATION, load_template(str(path))).prompt


def test_sillytavern_macros_and_alignment(tmp_path: Path) -> None:
    preset = {
        "name": "Names", "input_sequence": "<|im_start|>{{name}}", "output_sequence": "<|im_start|>{{char}}",
        "input_suffix": "<|im_end|>\n", "output_suffix": "<|im_end|>\n", "wrap": True, "macro": True,
        "user_alignment_message": "Let's get started.", "system_same_as_user": True, "stop_sequence": "",
    }
    path = tmp_path / "names.json"
    path.write_text(json.dumps(preset), encoding="utf-8")
    messages = [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "Hi", "name": "Bob"}]
    assert render_chat(messages, load_template(str(path))).prompt == (
        "<|im_start|>User\nLet's get started.<|im_end|>\n<|im_start|>Assistant\nWelcome!<|im_end|>\n"
        "<|im_start|>Bob\nBob: Hi<|im_end|>\n<|im_start|>Assistant\n"
    )


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
