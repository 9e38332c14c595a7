"""Request bodies: read with a hard size limit, decode JSON or YAML by Content-Type.

Every failure is a tasks.errors error (413 for too large, 400 for malformed, 415 for a format we
do not read), raised before anything reaches the control plane, so a rejection stores nothing.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from master.api.errors import UnsupportedMediaType
from tasks.errors import PayloadTooLarge, ValidationError

JSON_TYPES = frozenset({"application/json", ""})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as more than `limit` bytes are announced or
    arrive (a chunked body has no Content-Length: count as it streams)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes is over the "
                              f"limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a 256 KiB document of nested aliases can expand into
    gigabytes once validated; a job spec never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted", event.start_mark)
        return super().compose_node(parent, index)


def decode_document(raw: bytes, content_type: str) -> dict[str, Any]:
    """Decode a JSON or YAML mapping; which one by `content_type` (no type means JSON)."""
    if not raw.strip():
        raise ValidationError("the request body is empty: send a JSON or YAML document")
    kind = content_type.split(";")[0].strip().lower()
    if kind in YAML_TYPES:
        try:
            data = yaml.load(raw, Loader=_NoAliasLoader)  # a SafeLoader subclass
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValidationError(f"malformed YAML: {_one_line(exc)}") from exc
    elif kind in JSON_TYPES:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ValidationError(f"malformed JSON: {_one_line(exc)}") from exc
    else:
        raise UnsupportedMediaType(f"Content-Type {kind!r} is not read here: use "
                                   "application/json or application/yaml")
    if not isinstance(data, dict):
        raise ValidationError(f"the body must be a mapping (object), not {type(data).__name__}")
    return data


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
