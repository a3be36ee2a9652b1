"""SillyTavern instruct presets (its export format) to and from our Template.

Import follows SillyTavern's ``instruct-mode.js``: ``wrap`` puts a newline between a sequence
and the text and makes an empty suffix a newline; ``system_same_as_user`` renders system
messages as user turns; ``story_string_prefix``/``suffix`` (older: ``system_sequence_prefix``/
``suffix``) wrap the system prompt that opens the chat; ``last_output_sequence`` starts the
reply; the stop strings are ``stop_sequence`` plus, with ``sequences_as_stop_strings`` (the
default), every sequence line, each preceded by a newline when ``wrap`` is on; ``{{name}}``,
``{{user}}`` and ``{{char}}`` expand when ``macro`` is on.

Export writes the SillyTavern keys (usable in SillyTavern as they are) plus a ``rosetta`` key
with our full template. On import the ``rosetta`` copy wins only while the SillyTavern keys
still say what it would export, so a preset edited in SillyTavern is read from its edited keys.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .model import NAMES_MODES, Template, TemplateError, template_from_mapping, template_to_mapping

# Keys whose presence marks a mapping as a SillyTavern instruct preset.
MARKER_KEYS = ("input_sequence", "output_sequence")
_SEQ_NAMES = {"input_sequence": "User", "output_sequence": "Assistant", "first_output_sequence": "Assistant",
              "last_output_sequence": "Assistant", "system_sequence": "System", "last_system_sequence": "System"}


def is_sillytavern(data: Any) -> bool:
    """Whether a loaded file is a SillyTavern instruct preset."""
    return isinstance(data, Mapping) and any(key in data for key in MARKER_KEYS)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TemplateError(f"SillyTavern preset: {key!r} must be a string")
    return value


def _stops(data: Mapping[str, Any], wrap: bool, macro: bool) -> tuple[str, ...]:
    """SillyTavern's getInstructStoppingSequences for this preset."""
    raw = [_text(data, "stop_sequence")]
    # Older presets lack the key; SillyTavern's migration turns it on.
    if data.get("sequences_as_stop_strings", True):
        for key, who in _SEQ_NAMES.items():
            raw.append(re.sub(r"\{\{name\}\}", who, _text(data, key), flags=re.IGNORECASE))
    out: list[str] = []
    for line in dict.fromkeys(line for seq in raw if seq for line in seq.split("\n")):
        if line.strip():
            stop = "\n" + line if wrap else line
            if macro:
                stop = re.sub(r"\{\{user\}\}", "User", stop, flags=re.IGNORECASE)
                stop = re.sub(r"\{\{char\}\}", "Assistant", stop, flags=re.IGNORECASE)
            out.append(stop)
    return tuple(dict.fromkeys(out))


def _converted(data: Mapping[str, Any], name: str) -> Template:
    wrap = bool(data.get("wrap", False))
    macro = bool(data.get("macro", True))
    sep = "\n" if wrap else ""

    def prefix(key: str) -> str:
        seq = _text(data, key)
        return seq + sep if seq else ""

    def optional(key: str) -> str | None:
        return prefix(key) if _text(data, key) else None

    def suffix(key: str) -> str:
        return _text(data, key) or sep

    story_prefix, story_suffix = _text(data, "story_string_prefix"), _text(data, "story_string_suffix")
    old_prefix, old_suffix = _text(data, "system_sequence_prefix"), _text(data, "system_sequence_suffix")
    first_system: tuple[str | None, str | None] = (None, None)
    if "story_string_prefix" in data or "story_string_suffix" in data:
        # Newer presets say exactly how the opening system prompt is wrapped ("" is no wrapping).
        first_system = (story_prefix, story_suffix)
    elif old_prefix or old_suffix:
        first_system = (old_prefix + sep if old_prefix else "", sep + old_suffix if old_suffix else "")
    last_output = _text(data, "last_output_sequence")
    names = data.get("names_behavior", "force")
    if names not in NAMES_MODES:
        raise TemplateError(f"SillyTavern preset: names_behavior must be one of {list(NAMES_MODES)}")
    return Template(
        name=str(data.get("name") or name),
        user_prefix=prefix("input_sequence"),
        user_suffix=suffix("input_suffix"),
        assistant_prefix=prefix("output_sequence"),
        assistant_suffix=suffix("output_suffix"),
        system_prefix=prefix("system_sequence"),
        system_suffix=suffix("system_suffix"),
        system="as_user" if data.get("system_same_as_user") else "native",
        first_system_prefix=first_system[0],
        first_system_suffix=first_system[1],
        first_user_prefix=optional("first_input_sequence"),
        last_user_prefix=optional("last_input_sequence"),
        first_assistant_prefix=optional("first_output_sequence"),
        # SillyTavern trims the end of the reply's sequence when wrapping, then adds the newline.
        generation_prefix=(last_output.rstrip() + sep if wrap else last_output) if last_output else None,
        user_alignment=_text(data, "user_alignment_message"),
        names=names,
        macro=macro,
        stop=_stops(data, wrap, macro),
    )


def from_sillytavern(data: Mapping[str, Any], *, name: str = "sillytavern") -> Template:
    """A Template from a SillyTavern instruct preset (``name`` when the preset has none)."""
    saved = data.get("rosetta")
    if isinstance(saved, Mapping):
        restored = template_from_mapping(saved, source="SillyTavern preset 'rosetta' key")
        exported = to_sillytavern(restored)
        if all(data.get(key) == value for key, value in exported.items() if key != "rosetta"):
            return restored
    return _converted(data, name)


def to_sillytavern(template: Template) -> dict[str, Any]:
    """``template`` as a SillyTavern instruct preset (plus our full copy under ``rosetta``).

    What SillyTavern cannot say (merged system modes, a default system prompt, a tool role,
    BOS, trimming, stop strings with newlines) survives only in the ``rosetta`` copy."""
    if template.jinja is not None:
        raise TemplateError(f"template {template.name!r} is a Jinja chat template; it has no SillyTavern form")
    as_user = template.system == "as_user"
    opening_prefix = template.first_system_prefix
    opening_suffix = template.first_system_suffix
    # SillyTavern wraps the opening system prompt with the story string prefix/suffix only; where
    # we have none, the plain system (or user) sequence is what we would use.
    plain_prefix = template.user_prefix if as_user else template.system_prefix
    plain_suffix = template.user_suffix if as_user else template.system_suffix
    story_prefix = plain_prefix if opening_prefix is None else opening_prefix
    story_suffix = plain_suffix if opening_suffix is None else opening_suffix
    return {
        "name": template.name,
        "input_sequence": template.user_prefix,
        "input_suffix": template.user_suffix,
        "output_sequence": template.assistant_prefix,
        "output_suffix": template.assistant_suffix,
        "system_sequence": template.system_prefix,
        "system_suffix": template.system_suffix,
        "first_input_sequence": template.first_user_prefix or "",
        "last_input_sequence": template.last_user_prefix or "",
        "first_output_sequence": template.first_assistant_prefix or "",
        "last_output_sequence": template.generation_prefix or "",
        "last_system_sequence": "",
        "story_string_prefix": story_prefix,
        "story_string_suffix": story_suffix,
        "stop_sequence": "\n".join(template.stop),
        "sequences_as_stop_strings": False,
        "wrap": False,
        "macro": template.macro,
        "names_behavior": template.names,
        "system_same_as_user": as_user,
        "user_alignment_message": template.user_alignment,
        "skip_examples": False,
        "activation_regex": "",
        "rosetta": template_to_mapping(template),
    }
