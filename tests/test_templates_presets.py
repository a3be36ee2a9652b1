"""Instruct templates: our file format and SillyTavern's presets (load, render, round trip, macros).

Expected prompts are written out from the sources each shipped template cites (model chat
templates, llama.cpp's test-chat-template.cpp expectations, Mistral's cookbook, SillyTavern's
presets), not from the renderer. The mixin that uses the templates: tests/test_textgen.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from templates_helpers import CONVERSATION, DATA, EXPECTED, LLAMA3_JINJA

from translators.templates import TemplateError, load_template, render_chat, to_sillytavern

ST_PRESETS = DATA / "sillytavern"


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
