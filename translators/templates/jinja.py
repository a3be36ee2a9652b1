"""A model's own chat template (``template: auto``), rendered in a jinja2 sandbox.

The environment matches Hugging Face ``apply_chat_template`` (the templates are written for
it): ``ImmutableSandboxedEnvironment`` with ``trim_blocks``/``lstrip_blocks``, the
``loopcontrols`` extension and the ``{% generation %}`` tag, a ``tojson`` that does not escape
HTML, and the globals ``raise_exception`` and ``strftime_now``. The sandbox refuses attribute
access to internals (``__class__``...), mutation of lists and dicts, and huge ``range()``; output
is capped in size. CPU time is not bounded: templates come from the operator's own backend.

A trailing assistant message is continued: the conversation is rendered with a marker in its
place and the prompt is cut at the marker, so whatever the template writes after an assistant
message (end-of-turn, EOS) is not there.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

import jinja2
from jinja2 import Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidRequest
from ..request import text_of
from .model import JinjaChat, Rendered, Template, TemplateError
from .render import ROLES, to_turns

# End-of-turn markers that, when a template writes them, are stop strings for its format.
TURN_ENDS: tuple[str, ...] = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>",
    "<｜end▁of▁sentence｜>", "<|observation|>", "<|user|>", "<|endoftext|>", "</s>",
)
# Stands in for the text of a continued assistant message; nothing a template would write.
PREFILL_MARKER = "\ue000rosetta-prefill\ue001"
# Output cap: generous for real prompts, small enough that a runaway template is refused.
MAX_OUTPUT_BASE = 2_000_000


class TemplateRaised(Exception):
    """The template called ``raise_exception`` (it rejects the conversation)."""


def _raise_exception(message: Any) -> None:
    raise TemplateRaised(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # jinja2's own tojson HTML-escapes '<', '>', '&' and '\''; chat templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (HF marks assistant text with it): renders its
    body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


class StrictSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, refusing unsafe attribute access outright: jinja2 would render it
    as an empty undefined value and go on, hiding that the template tried."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def sandbox() -> ImmutableSandboxedEnvironment:
    """A fresh environment set up like Hugging Face's chat-template one."""
    env = StrictSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", GenerationTag]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def implied_stops(source: str, eos_token: str) -> tuple[str, ...]:
    """Stop strings for a Jinja template: its EOS token and the end-of-turn markers it writes."""
    found = [eos_token] if eos_token else []
    found += [marker for marker in TURN_ENDS if marker in source]
    return tuple(dict.fromkeys(found))


def template_from_jinja(
    source: str, *, bos_token: str = "", eos_token: str = "", keep_bos: bool = False, name: str = "auto"
) -> Template:
    """A Template that renders with the model's own Jinja chat template.

    ``bos_token``/``eos_token`` are what the template expects (from the GGUF or
    tokenizer_config). Backends add BOS themselves when they tokenize, so a BOS the template
    writes through ``bos_token`` at the very start is left out of the prompt unless
    ``keep_bos``. Raises TemplateError when the source does not parse."""
    try:
        compiled = sandbox().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not parse: {exc.message} (line {exc.lineno})") from None
    chat = JinjaChat(source, bos_token, eos_token, keep_bos, compiled)
    return Template(name=name, bos=bos_token, stop=implied_stops(source, eos_token), jinja=chat)


def jinja_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: roles system/user/assistant/tool, text content."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = ROLES.get(str(message.get("role")), "user")
        item: dict[str, Any] = {"role": role, "content": text_of(message.get("content"))}
        for key in ("name", "tool_call_id"):
            if message.get(key):
                item[key] = message[key]
        if role == "assistant" and message.get("tool_calls"):
            item["tool_calls"] = list(message["tool_calls"])
            if message.get("content") is None:
                item["content"] = None
        out.append(item)
    return out


def strict_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in the shape strict templates accept: one leading system message,
    tool traffic as text, no two turns of one role in a row, a user turn first."""
    turns = to_turns(messages)
    systems = [t.text for t in turns if t.role == "system"]
    out: list[dict[str, Any]] = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
    body: list[dict[str, Any]] = []
    for turn in turns:
        if turn.role == "system":
            continue
        role = "assistant" if turn.role == "assistant" else "user"
        text = f"[Tool result: {turn.name or 'tool'}]\n{turn.text}" if turn.role == "tool" else turn.text
        if body and body[-1]["role"] == role:
            body[-1]["content"] += "\n\n" + text
        else:
            body.append({"role": role, "content": text})
    if body and body[0]["role"] == "assistant":
        body.insert(0, {"role": "user", "content": ""})
    return out + body


def _render(chat: JinjaChat, messages: list[dict[str, Any]], add_generation_prompt: bool, limit: int) -> str:
    pieces: Iterator[str] = chat.compiled.generate(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=chat.bos_token,
        eos_token=chat.eos_token,
        tools=None,
    )
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > limit:
            raise TemplateError(f"chat template output exceeds {limit} characters")
        out.append(piece)
    return "".join(out)


def _render_prompt(chat: JinjaChat, messages: list[dict[str, Any]], limit: int) -> str:
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or last.get("tool_calls") or not (last["content"] or "").strip():
        if last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
            messages = messages[:-1]  # an empty assistant message only asks for the reply
        return _render(chat, messages, True, limit)
    marked = messages[:-1] + [{**last, "content": PREFILL_MARKER}]
    text = _render(chat, marked, False, limit)
    cut = text.find(PREFILL_MARKER)
    content = str(last["content"])
    if cut >= 0:
        return text[:cut] + content
    # The template dropped the marker (it rewrites assistant text): start a reply and append.
    return _render(chat, messages[:-1], True, limit) + content


def render_jinja(messages: Sequence[Mapping[str, Any]], template: Template) -> Rendered:
    """The prompt for ``messages`` with ``template``'s Jinja chat template.

    A conversation the template rejects (``raise_exception``: roles must alternate, no system
    role...) is retried once in the strict shape, with a warning; if that fails too the client
    gets a 400 naming ``messages``."""
    chat = template.jinja
    if chat is None:
        raise TemplateError(f"template {template.name!r} has no Jinja chat template")
    plain = jinja_messages(messages)
    limit = MAX_OUTPUT_BASE + 4 * sum(len(m.get("content") or "") for m in plain)
    warnings: tuple[str, ...] = ()
    try:
        try:
            prompt = _render_prompt(chat, plain, limit)
        except TemplateRaised as exc:
            strict = strict_messages(messages)
            if strict == [{k: m[k] for k in ("role", "content")} for m in plain]:
                raise
            prompt = _render_prompt(chat, strict, limit)
            warnings = (
                f"the model's chat template rejected the conversation ({exc}); it was rendered with "
                "system messages merged into one, consecutive turns joined and tool results as user turns",
            )
    except TemplateRaised as exc:
        raise InvalidRequest(f"the model's chat template rejected the conversation: {exc}", param="messages") from None
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:  # SecurityError, UndefinedError, ...
        raise TemplateError(f"chat template failed: {exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
    if not chat.keep_bos and chat.bos_token and "bos_token" in chat.source and prompt.startswith(chat.bos_token):
        prompt = prompt[len(chat.bos_token):]
    return Rendered(prompt, template.stop, warnings)


__all__ = ["render_jinja", "template_from_jinja", "sandbox", "implied_stops", "TemplateRaised"]
