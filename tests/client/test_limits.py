"""Per-call limits as a submit writes them: sizes with units, timeouts, retries."""

from __future__ import annotations

from typing import Any

import pytest

from hmq import UsageError
from hmq.limits import Limits, format_memory, parse_memory


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GiB", 4 << 30),
        ("200MiB", 200 << 20),
        ("512 MB", 512_000_000),
        ("1.5GiB", 3 << 29),
        ("64kib", 64 << 10),
        ("2KB", 2000),
        ("3GB", 3_000_000_000),
        ("100B", 100),
        (123_456, 123_456),
        (None, None),
    ],
)
def test_memory_sizes(text: Any, size: Any) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["4 GiBs", "GiB", "-1GiB", "1e3MB", "0B", 0, -1, 2.5, True, [1], "4TiB"])
def test_bad_memory_sizes(bad: Any) -> None:
    with pytest.raises(UsageError, match="memory"):
        parse_memory(bad)


def test_sizes_are_shown_in_the_largest_unit_that_divides_them() -> None:
    sizes = (200 << 20, 4 << 30, 3 << 29, 3072, 1536)
    assert [format_memory(n) for n in sizes] == ["200 MiB", "4 GiB", "1536 MiB", "3 KiB", "1536 bytes"]


def test_limits_defaults_and_header_round_trip() -> None:
    assert Limits.of() == Limits(timeout=21600.0, memory=None, retries=0)
    limits = Limits.of(timeout=3, memory="1GiB", retries=2)
    assert Limits.from_header(limits.header()) == limits == Limits(3.0, 1 << 30, 2)
    assert Limits.from_header({}) == Limits(timeout=None, memory=None, retries=0)  # chunks from before limits
    assert Limits.of(timeout=None).timeout is None
    for bad in ({"timeout": 0}, {"timeout": "1h"}, {"retries": -1}, {"retries": 2.0}, {"retries": 101}):
        with pytest.raises(UsageError):
            Limits.of(**bad)
