"""Shared data of the instruct template tests: a fixed conversation, the prompt each shipped format
must render for it, and SillyTavern's captures.

Expected prompts are written out from the sources each shipped template cites (model chat
templates, llama.cpp's test-chat-template.cpp expectations, Mistral's cookbook, SillyTavern's
presets), not from the renderer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "transcripts" / "templates"

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


def sillytavern_messages() -> list[dict[str, Any]]:
    """What SillyTavern sent in chat-completion mode: two system messages, the greeting as an
    assistant turn, then the user (captured bytes, copied into the test data)."""
    line = (DATA / "sillytavern_cc_custom_nonstream.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return list(json.loads(line)["body_json"]["messages"])
