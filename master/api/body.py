"""Request bodies: read with a hard size limit and a deadline, decode JSON or YAML by
Content-Type, validate a job spec off the event loop.

Every failure is a tasks.errors error (413 for too large, 408 for a body that does not arrive
in time, 400 for malformed, 415 for a format we do not read), raised before anything reaches the
control plane, so a rejection stores nothing. A document nests at most MAX_DEPTH levels of
mappings and lists: YAML is refused while it is composed (PyYAML's composer recurses), JSON
after the C decoder (which stops itself with a RecursionError, also a 400).

Decoding and validating a spec costs up to ~1-2 s of CPU for a 256 KiB YAML body (PyYAML is pure
Python), and the leader's event loop also runs the servers' heartbeats: `Validator` runs it on
VALIDATION_THREADS threads of its own (not the default executor, which ZooKeeper calls use), at
most VALIDATION_QUEUE at a time (more: 503, retry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from master.api.errors import RequestTimeout, UnsupportedMediaType
from tasks.errors import PayloadTooLarge, Unavailable, ValidationError
from tasks.spec import JobSpec, parse_job_spec

MAX_DEPTH = 64
VALIDATION_THREADS = 2
VALIDATION_QUEUE = 8
_TOO_DEEP = f"the document nests more than {MAX_DEPTH} levels of mappings and lists"

JSON_TYPES = frozenset({"application/json", ""})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, or PayloadTooLarge as soon as more than `limit` bytes are announced or
    arrive (a chunked body has no Content-Length: count as it streams), or RequestTimeout when
    it has not all arrived `timeout` seconds after the handler began reading it."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes is over the "
                              f"limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes",
                                          limit=limit)
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s "
                             f"({size} bytes came)") from exc
    except (RequestPayloadError, HttpProcessingError) as exc:
        # e.g. Content-Encoding: gzip over bytes that are not gzip, a broken chunk
        cause = exc.__cause__ if isinstance(exc, RequestPayloadError) else exc
        reason = getattr(cause, "message", None) or str(cause or exc)
        raise ValidationError(f"malformed request body: {_one_line(reason)[:200]}") from exc


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a 256 KiB document of nested aliases can expand into
    gigabytes once validated; a job spec never needs them."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted", event.start_mark)
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:   # before the composer recurses any further
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise ValidationError(f"{_TOO_DEEP} (YAML line {line})")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def nesting(value: Any) -> int:
    """How many levels of dicts and lists `value` has (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            if depth + 1 > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in item)
    return deepest


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
        except RecursionError as exc:   # a backstop: the depth check above comes first
            raise ValidationError(_TOO_DEEP) from exc
    elif kind in JSON_TYPES:
        try:
            data = json.loads(raw)
        except RecursionError as exc:
            raise ValidationError(_TOO_DEEP) from exc
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ValidationError(f"malformed JSON: {_one_line(exc)}") from exc
        if nesting(data) > MAX_DEPTH:
            raise ValidationError(_TOO_DEEP)
    else:
        raise UnsupportedMediaType(f"Content-Type {kind!r} is not read here: use "
                                   "application/json or application/yaml")
    if not isinstance(data, dict):
        raise ValidationError(f"the body must be a mapping (object), not {type(data).__name__}")
    return data


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def job_spec_from_body(raw: bytes, content_type: str) -> JobSpec:
    """Decode and validate a job spec body (blocking: run it through a Validator)."""
    try:
        return parse_job_spec(decode_document(raw, content_type))
    except RecursionError as exc:   # whatever recursed past the checks above: still a 400
        raise ValidationError(_TOO_DEEP) from exc


class Validator:
    """Runs job_spec_from_body off the event loop, on threads of its own, at most
    VALIDATION_QUEUE at a time."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(VALIDATION_THREADS,
                                            thread_name_prefix="api-validate")
        self._slots = asyncio.Semaphore(VALIDATION_QUEUE)

    async def job_spec(self, raw: bytes, content_type: str) -> JobSpec:
        if self._slots.locked():
            raise Unavailable(f"{VALIDATION_QUEUE} job specs are being validated; retry shortly")
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, job_spec_from_body, raw,
                                              content_type)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


VALIDATOR = web.AppKey("validator", Validator)


async def validator_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx entry: the app's Validator, shut down with the app."""
    app[VALIDATOR] = Validator()
    try:
        yield
    finally:
        app[VALIDATOR].close()
