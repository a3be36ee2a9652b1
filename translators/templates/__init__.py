"""Instruct templates: how a chat becomes one prompt for a text-completion backend.

Templates are data (``data/*.yaml``, one file per format, each saying where its strings were
verified), loaded with :func:`load_template`; SillyTavern instruct presets load the same way;
:func:`template_from_jinja` wraps a model's own chat template for ``template: auto``.
:func:`render_chat` turns OpenAI messages into a :class:`Rendered` prompt and stop strings.

Template files in our format are YAML (or JSON) with the keys of :class:`Template`; a ``.jinja``
file, or a YAML file with a ``jinja`` key (and optional ``bos``, ``eos``, ``stop``), is a Jinja
chat template.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .jinja import render_jinja, template_from_jinja
from .model import Rendered, SystemMode, Template, TemplateError, template_from_mapping, template_to_mapping
from .render import render_instruct
from .sillytavern import from_sillytavern, is_sillytavern, to_sillytavern

__all__ = [
    "Rendered", "SystemMode", "Template", "TemplateError", "from_sillytavern", "load_template", "names",
    "render_chat", "template_from_jinja", "template_from_mapping", "template_to_mapping", "to_sillytavern",
]

_JINJA_FILE_KEYS = frozenset({"name", "description", "jinja", "bos", "eos", "stop"})


def _key(name: str) -> str:
    # "Llama 3", "llama_3" and "LLAMA-3" all mean the same shipped template.
    return name.strip().lower().replace("_", "-").replace(" ", "-")


# The C loader when PyYAML was built with libyaml: the shipped files are read on every lookup.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_LOADER)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source}: not valid YAML/JSON ({exc})") from None


def _data_files() -> list[Any]:
    data = resources.files(__package__).joinpath("data")
    return sorted((e for e in data.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name)


def _read_shipped(entry: Any) -> Template:
    source = f"shipped template {entry.name}"
    return template_from_mapping(_parse(entry.read_text(encoding="utf-8"), source), source=source)


def _shipped() -> dict[str, Template]:
    """Every shipped template by canonical name (read from the package data each call, not
    kept in module state; translators hold on to the Template they resolved)."""
    return {t.name: t for t in map(_read_shipped, _data_files())}


def names() -> list[str]:
    """The canonical names of the shipped templates, sorted."""
    return sorted(_shipped())


def _from_file(path: Path) -> Template:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"template file {source}: {exc.strerror or exc}") from None
    if path.suffix == ".jinja":
        return template_from_jinja(text, name=path.stem)
    data = _parse(text, source)
    if not isinstance(data, Mapping):
        raise TemplateError(f"{source}: a template file holds a mapping")
    if is_sillytavern(data):
        return from_sillytavern(data, name=path.stem)
    if "jinja" in data:
        unknown = sorted(set(data) - _JINJA_FILE_KEYS)
        if unknown:
            raise TemplateError(f"{source}: unknown keys {unknown} beside 'jinja'; allowed: {sorted(_JINJA_FILE_KEYS)}")
        template = template_from_jinja(
            str(data["jinja"]), bos_token=str(data.get("bos") or ""), eos_token=str(data.get("eos") or ""),
            name=str(data.get("name") or path.stem),
        )
        extra = tuple(str(s) for s in data.get("stop") or ())
        return replace(template, stop=tuple(dict.fromkeys(template.stop + extra)))
    return template_from_mapping({"name": path.stem, **data}, source=source)


def load_template(spec: str) -> Template:
    """The template ``spec`` names: a shipped name or alias (case-insensitive: ``chatml``,
    ``llama3``, ``mistral-v7``...), or the path of a template file (ours, a SillyTavern instruct
    preset JSON, or a ``.jinja`` chat template). Raises TemplateError (a ValueError) naming the
    valid names when it is neither."""
    wanted = _key(spec)
    # Each shipped file is named after its template: try that file before reading them all.
    direct = [e for e in _data_files() if e.name == f"{wanted}.yaml"]
    if direct:
        return _read_shipped(direct[0])
    shipped = _shipped()
    for template in shipped.values():
        if wanted == _key(template.name) or wanted in (_key(a) for a in template.aliases):
            return template
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(path)
    looks_like_path = any(sep in spec for sep in ("/", "\\")) or path.suffix in (".json", ".yaml", ".yml", ".jinja")
    what = f"no template file {spec!r}" if looks_like_path else f"unknown template {spec!r}"
    raise TemplateError(f"{what}; shipped templates: {', '.join(sorted(shipped))} (or a template file path)")


def render_chat(messages: Sequence[Mapping[str, Any]], template: Template) -> Rendered:
    """The prompt for OpenAI chat ``messages`` in ``template``, and the stop strings it implies.

    Raises InvalidRequest(param="messages") when a model's Jinja template rejects the
    conversation, TemplateError when a Jinja template is broken or unsafe."""
    if template.jinja is not None:
        return render_jinja(messages, template)
    return render_instruct(messages, template)
