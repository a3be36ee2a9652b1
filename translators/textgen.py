"""Shared by the text-completion translators: chat → prompt with an instruct template, and the
context-size check.

A translator mixes :class:`TemplatedText` in before :class:`~translators.base.Translator`
(``class KoboldCpp(TemplatedText, Translator)``), subclasses :class:`TextOptions` and
:class:`TextModelOptions` for its config, and overrides what its backend can tell:
``chat_template`` (the model's own Jinja template, for ``template: auto``), ``context_limit``
and ``count_tokens``. In ``build_request`` it adds ``self.template_warnings(req)`` to its
``Upstream.warnings``; it calls ``await self.check_context(transport, req)`` from its
``prepare`` (after ``super().prepare``) or ``exchange``.

Per-request warnings travel on the request itself: ``prepare`` returns a
:class:`TemplatedRequest` (a Request with one more field), so nothing is shared between
concurrent requests. The only state kept is a per-translator memo of resolved templates, keyed
by template spec; its entries never change once written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, field_validator

from .base import Backend, Transport
from .errors import ContextLengthExceeded
from .request import Request
from .templates import Template, TemplateError, load_template, render_chat, template_from_jinja

AUTO = "auto"


def _checked_spec(value: str | None, *, allow_auto: bool = True) -> str | None:
    """Config-time check that a template spec names something loadable."""
    if value is None or (allow_auto and value.strip().lower() == AUTO):
        return value
    load_template(value)  # raises TemplateError (a ValueError): pydantic reports it with its location
    return value


class TextOptions(BaseModel):
    """Backend options every text-completion translator has (subclass to add your own).

    ``template``: the instruct template for chats: a shipped name, a template file, or ``auto``
    (the model's own chat template, when the backend reports one); per-model ``template``
    overrides it; unset means ``auto``. ``template_fallback``: used when ``auto`` finds none."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str | None = None
    template_fallback: str = "chatml"

    @field_validator("template")
    @classmethod
    def _template_exists(cls, value: str | None) -> str | None:
        return _checked_spec(value)

    @field_validator("template_fallback")
    @classmethod
    def _fallback_exists(cls, value: str) -> str:
        if value.strip().lower() == AUTO:
            raise ValueError("template_fallback is used when 'auto' finds no template; it cannot be 'auto'")
        _checked_spec(value, allow_auto=False)
        return value


class TextModelOptions(BaseModel):
    """Per-model options every text-completion translator has (subclass to add your own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str | None = None

    @field_validator("template")
    @classmethod
    def _template_exists(cls, value: str | None) -> str | None:
        return _checked_spec(value)


@dataclass(frozen=True, slots=True)
class TemplatedRequest(Request):
    """A Request whose chat was rendered into ``prompt``; ``template_warnings`` says what the
    rendering changed or assumed, for ``Upstream.warnings``."""

    template_warnings: tuple[str, ...] = ()


def template_warnings(req: Request) -> tuple[str, ...]:
    """The template warnings ``prepare`` attached to ``req`` (none for other requests)."""
    return req.template_warnings if isinstance(req, TemplatedRequest) else ()


# Content parts a text prompt carries; any other kind (images, audio, files) cannot be rendered.
TEXT_PARTS = frozenset({"text", "input_text"})


def dropped_parts(messages: Any) -> tuple[str, ...]:
    """The kinds of content part in ``messages`` a prompt string cannot carry (sorted)."""
    kinds = {
        str(part.get("type"))
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, Mapping) and part.get("type") not in TEXT_PARTS
    }
    return tuple(sorted(kinds))


def _option(options: Any, name: str) -> Any:
    # req.options is the translator's ModelOptions instance; tests may pass a plain mapping.
    if isinstance(options, Mapping):
        return options.get(name)
    return getattr(options, name, None)


class TemplatedText:
    """Mixin for translators whose backend takes one prompt string (see the module doc)."""

    Options: ClassVar[type[BaseModel]] = TextOptions
    ModelOptions: ClassVar[type[BaseModel]] = TextModelOptions
    name: ClassVar[str]
    backend: Backend
    options: Any

    # --- what a backend can tell; override ------------------------------------------------
    async def chat_template(self, transport: Transport) -> tuple[str, str, str] | None:
        """The model's own chat template as ``(jinja_source, bos_token, eos_token)``, or None
        when the backend does not report one. Raise UpstreamError when the backend fails."""
        return None

    async def context_limit(self, transport: Transport) -> int | None:
        """The model's context size in tokens, or None when unknown."""
        return None

    async def count_tokens(self, transport: Transport, text: str) -> int | None:
        """How many tokens ``text`` is for the model, or None when the backend cannot say."""
        return None

    # --- templates ------------------------------------------------------------------------
    def template_spec(self, req: Request) -> str:
        """The template spec for ``req``: the model's, else the backend's, else ``auto``."""
        return _option(req.options, "template") or _option(self.options, "template") or AUTO

    def _fallback(self) -> Template:
        return load_template(_option(self.options, "template_fallback") or "chatml")

    async def resolve_template(self, transport: Transport, spec: str) -> tuple[Template, tuple[str, ...]]:
        """The Template ``spec`` names, with the warnings that go with using it; resolved once
        per translator and spec (``auto`` asks the backend once)."""
        memo: dict[str, tuple[Template, tuple[str, ...]]] = self.__dict__.setdefault("_template_memo", {})
        if spec in memo:
            return memo[spec]
        resolved: tuple[Template, tuple[str, ...]]
        if spec.strip().lower() != AUTO:
            resolved = (load_template(spec), ())
        else:
            own = await self.chat_template(transport)
            fallback_name = _option(self.options, "template_fallback") or "chatml"
            if own is None:
                resolved = (
                    self._fallback(),
                    (f"{self.name} backend reported no chat template for the model; the chat was rendered "
                     f"with the '{fallback_name}' template (set 'template' in the config to choose one)",),
                )
            else:
                source, bos, eos = own
                try:
                    resolved = (template_from_jinja(source, bos_token=bos, eos_token=eos), ())
                except TemplateError as exc:
                    resolved = (self._fallback(), (f"{exc}; the chat was rendered with the '{fallback_name}' template",))
        memo[spec] = resolved
        return resolved

    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Render a chat into ``prompt`` with the model's template and add the template's stop
        strings to ``stop``; a completion request is returned unchanged."""
        if req.operation != "chat":
            return req
        template, warnings = await self.resolve_template(transport, self.template_spec(req))
        try:
            rendered = render_chat(req.messages, template)
        except TemplateError as exc:
            if template.jinja is None:
                raise
            # The model's own template is broken or unsafe for this conversation: do not fail
            # the request over it, say so.
            fallback_name = _option(self.options, "template_fallback") or "chatml"
            rendered = render_chat(req.messages, self._fallback())
            warnings += (f"{exc}; the chat was rendered with the '{fallback_name}' template",)
        dropped = dropped_parts(req.messages)
        if dropped:  # the README promises: what a backend cannot take is said, never silently lost
            warnings += (f"content parts of type {', '.join(dropped)} were not sent: this backend takes text only",)
        stop = req.stop + tuple(s for s in rendered.stop if s not in req.stop)
        values = {f.name: getattr(req, f.name) for f in fields(req)}
        values.update(prompt=rendered.prompt, stop=stop, template_warnings=warnings + rendered.warnings)
        return TemplatedRequest(**values)

    def template_warnings(self, req: Request) -> tuple[str, ...]:
        """The warnings ``prepare`` attached to ``req``, for ``Upstream.warnings``."""
        return template_warnings(req)

    # --- context --------------------------------------------------------------------------
    def completion_budget(self, req: Request) -> int:
        """The tokens the answer may take, as this backend will be asked (override where the
        backend reads other field names or has a default limit)."""
        return req.max_tokens or 0

    async def check_context(self, transport: Transport, req: Request) -> None:
        """Raise ContextLengthExceeded when the prompt's tokens plus ``max_tokens`` exceed the
        model's context (checked only when the backend reports both the limit and a count)."""
        limit = await self.context_limit(transport)
        if limit is None:
            return
        prompt = req.prompt if req.prompt is not None else req.body.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else [p for p in prompt or () if isinstance(p, str)]
        completion = self.completion_budget(req)
        for text in texts:
            count = await self.count_tokens(transport, text)
            if count is None:
                return
            if count + completion > limit:
                where = "messages" if req.operation == "chat" else "prompt"
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{count + completion} tokens ({count} in the {where}, {completion} in the completion). "
                    f"Please reduce the length of the {where} or completion.",
                    param=where,
                )
