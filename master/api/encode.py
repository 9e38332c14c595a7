"""Views to JSON: frozen dataclasses (master/api/ports.py) and pydantic models (the job spec).

`dataclasses.asdict` would deep-copy the embedded pydantic `JobSpec` untouched, so the walk is
done here once: dataclasses field by field, pydantic models in their JSON mode without nulls
(the same form ZooKeeper stores), tuples as lists, non-finite floats as null.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # e.g. utilisation of a server reporting zero capacity: JSON has no NaN
    return value


def json_response(value: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(to_jsonable(value), separators=(",", ":")).encode(),
        status=status, content_type="application/json", headers=headers,
    )
