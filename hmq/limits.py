"""Per-call limits: wall time, memory and retries, checked once for the client, the API and the worker.

A submit names them (``timeout=``, ``memory=``, ``retries=``); they travel twice: in the chunk
header the user signs (what the worker enforces, which the API cannot change) and in the submit
request (what the API stores per task, for lease deadlines, claims and requeues).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from hmq import defaults
from hmq._errors import UsageError

MEMORY_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
"""Units a memory size may be written in (case-insensitive): ``"4GiB"``, ``"512 MB"``, ``"1.5GiB"``."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_memory(value: Any) -> Optional[int]:
    """Bytes of a memory size: an int of bytes, or a number and a unit (``MEMORY_UNITS``);
    ``None`` stays ``None`` (no limit). Raises :class:`hmq.UsageError` for anything else."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match[2].lower() in MEMORY_UNITS:
        size = math.floor(float(match[1]) * MEMORY_UNITS[match[2].lower()])
    else:
        units = "/".join(("B", "KiB", "MiB", "GiB", "KB", "MB", "GB"))
        raise UsageError(f"memory must be an int of bytes or a size like '4GiB' ({units}), not {value!r}")
    if not 1 <= size <= defaults.TASK_MAX_MEMORY_BYTES:
        raise UsageError(f"memory must be between 1 byte and {format_memory(defaults.TASK_MAX_MEMORY_BYTES)}")
    return size


def format_memory(size: int) -> str:
    """``"200 MiB"``: the largest binary unit that divides ``size``, else bytes."""
    for unit in ("GiB", "MiB", "KiB"):
        factor = MEMORY_UNITS[unit.lower()]
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def check_timeout(value: Any) -> Optional[float]:
    """Seconds of wall time per call (``None``: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= defaults.TASK_MAX_TIMEOUT:
        raise UsageError(
            f"timeout must be a number of seconds above 0 and at most {defaults.TASK_MAX_TIMEOUT:.0f}, "
            f"or None for no limit, not {value!r}"
        )
    return float(value)


def check_retries(value: Any) -> int:
    """How many times a failed call runs again."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= defaults.TASK_MAX_RETRIES:
        raise UsageError(f"retries must be an integer from 0 to {defaults.TASK_MAX_RETRIES}, not {value!r}")
    return value


def format_seconds(seconds: float) -> str:
    """``"3"``, ``"2.5"``: seconds as a user wrote them."""
    return f"{seconds:g}"


@dataclass(frozen=True)
class Limits:
    """The limits of one submit's calls, checked (:meth:`of`)."""

    timeout: Optional[float] = defaults.TASK_TIMEOUT_SECONDS
    """Wall time per call in seconds; ``None``: no limit."""

    memory: Optional[int] = None
    """Bytes of address space per call; ``None``: no limit."""

    retries: int = 0
    """How many times a call that failed runs again (on any worker)."""

    @classmethod
    def of(cls, timeout: Any = defaults.TASK_TIMEOUT_SECONDS, memory: Any = None, retries: Any = 0) -> Limits:
        """Checked limits; raises :class:`hmq.UsageError` for a bad value."""
        return cls(check_timeout(timeout), parse_memory(memory), check_retries(retries))

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Limits:
        """The limits a chunk header carries; chunks written before limits existed carry none."""
        return cls(
            timeout=None if header.get("timeout") is None else float(header["timeout"]),
            memory=None if header.get("memory") is None else int(header["memory"]),
            retries=int(header.get("retries") or 0),
        )

    def header(self) -> dict[str, Any]:
        """The fields a chunk header carries."""
        return {"timeout": self.timeout, "memory": self.memory, "retries": self.retries}
