"""What an instruct template is: the value every renderer and loader shares.

A :class:`Template` is plain data (prefixes, suffixes, how system messages are placed, the
stop strings the format implies). The shipped ones live in ``data/*.yaml``; SillyTavern presets
and a model's own Jinja chat template are converted into the same value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping, get_args

SystemMode = Literal["native", "as_user", "leading", "next_user", "last_user"]
"""How system (and developer) messages are rendered:

- ``native``: each one is its own turn with ``system_prefix``/``system_suffix``, where it stands.
- ``as_user``: each one is rendered as a user turn (SillyTavern's "system same as user").
- ``leading``: all of them are joined with ``system_join`` into one block at the very start
  (DeepSeek's template does this).
- ``next_user``: the model has no system role; the text (wrapped in ``system_prefix`` and
  ``system_suffix``) goes in front of the next user message (Gemma, Llama 2, Mistral v1).
- ``last_user``: as ``next_user``, but all of it goes in front of the last user message
  (Mistral v2/v3 and Tekken, as mistral-common does).
"""

NamesMode = Literal["none", "force", "always"]
"""SillyTavern's ``names_behavior``. A message's ``name`` is written as ``name: text`` unless
this is ``none`` (``force`` and ``always`` behave the same here: only messages that carry a
name get one, because an OpenAI client names exactly the messages it wants named)."""

SYSTEM_MODES: tuple[str, ...] = get_args(SystemMode)
NAMES_MODES: tuple[str, ...] = get_args(NamesMode)


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered: unknown name, bad file, broken or unsafe
    Jinja. (A conversation the template itself rejects is an ``InvalidRequest`` instead.)"""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A chat rendered to one prompt, and the stop strings its format implies.

    ``warnings`` says what the renderer had to change (e.g. a conversation reshaped for a strict
    Jinja template); translators pass them on in ``Upstream.warnings``."""

    prompt: str
    stop: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JinjaChat:
    """A model's own Jinja chat template (HF / GGUF style), compiled in a sandbox.

    ``compiled`` is the jinja2 Template object; it does not take part in equality."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    keep_bos: bool = False
    compiled: Any = field(default=None, compare=False, repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class Template:
    """One instruct format. Optional prefixes left as None fall back to the plain ones."""

    name: str
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    system_prefix: str = ""
    system_suffix: str = ""
    system: SystemMode = "native"
    # Joins several system messages where they are merged into one block.
    system_join: str = "\n\n"
    # Wrapping of a system message that opens the conversation (SillyTavern's story string
    # prefix/suffix); None: the plain system (or, for ``as_user``, user) prefix and suffix.
    first_system_prefix: str | None = None
    first_system_suffix: str | None = None
    first_user_prefix: str | None = None
    last_user_prefix: str | None = None
    first_assistant_prefix: str | None = None
    # What starts the assistant's turn the model writes; None: ``assistant_prefix``. Differs
    # where the model produces the separating space itself (Mistral, Llama 2).
    generation_prefix: str | None = None
    # A tool role of the model's own; None: tool results are rendered as user turns.
    tool_prefix: str | None = None
    tool_suffix: str | None = None
    # Inserted as the system message when a conversation has none (the model's own template
    # does the same, e.g. Qwen 2.5, Vicuna).
    default_system: str = ""
    # Inserted as a user message when the conversation (after system messages) starts with the
    # assistant (SillyTavern's ``user_alignment_message``); empty: nothing is inserted.
    user_alignment: str = ""
    # The BOS token text. Backends (llama.cpp, KoboldCpp, Ollama, TGW, Tabby) add BOS when they
    # tokenize, so it is written into the prompt only when ``add_bos`` is set (GLM-4's
    # ``[gMASK]<sop>``, which the tokenizer does not add).
    bos: str = ""
    add_bos: bool = False
    # Strip whitespace around each message's text, as the model's own template does.
    trim: bool = False
    names: NamesMode = "force"
    # Expand {{name}}, {{user}}, {{char}} in prefixes and suffixes (SillyTavern's ``macro``).
    macro: bool = False
    stop: tuple[str, ...] = ()
    description: str = ""
    aliases: tuple[str, ...] = ()
    jinja: JinjaChat | None = None


# Keys a template file in our format may hold (everything but the Jinja object).
FILE_KEYS: frozenset[str] = frozenset(f.name for f in fields(Template)) - {"jinja"}
_OPTIONAL_STR = {
    "first_system_prefix", "first_system_suffix", "first_user_prefix", "last_user_prefix",
    "first_assistant_prefix", "generation_prefix", "tool_prefix", "tool_suffix",
}
_BOOLS = {"add_bos", "trim", "macro"}
_TUPLES = {"stop", "aliases"}


def template_from_mapping(data: Mapping[str, Any], *, source: str) -> Template:
    """A Template from a mapping in our file format; ``source`` names it in errors."""
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise TemplateError(f"{source}: unknown template keys {unknown}; known: {sorted(FILE_KEYS)}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise TemplateError(f"{source}: 'name' must be a non-empty string")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TUPLES:
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) for v in value
            ):
                raise TemplateError(f"{source}: '{key}' must be a list of strings")
            values[key] = tuple(value)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise TemplateError(f"{source}: '{key}' must be true or false")
            values[key] = value
        elif key in _OPTIONAL_STR and value is None:
            values[key] = None
        elif not isinstance(value, str):
            raise TemplateError(f"{source}: '{key}' must be a string")
        else:
            values[key] = value
    if values.get("system", "native") not in SYSTEM_MODES:
        raise TemplateError(f"{source}: 'system' must be one of {list(SYSTEM_MODES)}")
    if values.get("names", "force") not in NAMES_MODES:
        raise TemplateError(f"{source}: 'names' must be one of {list(NAMES_MODES)}")
    return Template(**values)


def template_to_mapping(template: Template) -> dict[str, Any]:
    """The file-format mapping of ``template`` (loading it back gives an equal Template)."""
    if template.jinja is not None:
        raise TemplateError(f"template {template.name!r} is a Jinja chat template; it has no instruct fields")
    out: dict[str, Any] = {}
    for f in fields(Template):
        if f.name == "jinja":
            continue
        value = getattr(template, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
