"""Turning a task's return value into JSON. Standard library only: the worker's executor loads
this file directly inside package environments that do not have hmq installed."""

from __future__ import annotations

import json
from typing import Any

_ARRAY_MODULES = ("numpy", "jax", "jaxlib", "cupy")


def json_default(obj: Any) -> Any:
    # numpy (and numpy-like) scalars and arrays become JSON numbers and lists, without
    # importing numpy here.
    if hasattr(obj, "tolist") and type(obj).__module__.split(".")[0] in _ARRAY_MODULES:
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(
        f"result of type {type(obj).__qualname__} is not JSON serialisable; return numbers, strings, lists, dicts or numpy values"
    )


def to_json(value: Any) -> bytes:
    """Encode a return value as compact JSON."""
    return json.dumps(value, default=json_default, separators=(",", ":")).encode()
