"""Splitting work into batches: every "at most N per request/statement/object" loop uses this."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of at most ``size`` (``itertools.batched`` for sequences,
    yielding lists, on every supported Python)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
