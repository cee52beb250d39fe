"""Checks of arguments that every layer shares: a path, a count, a size that must fit in memory.

Each raises a :class:`~geostp.errors.ConfigError` whose message names the argument as the public function spells
it, the value given and what was expected, so that a wrong type never surfaces as a ``TypeError`` from
:mod:`pathlib`, numpy or dask, and an impossible size is refused before anything is allocated.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from geostp.errors import ConfigError

__all__ = ["as_path", "count", "positive_number", "check_polling", "memory_bytes", "format_bytes", "check_fits",
           "a_type"]


def a_type(value: Any) -> str:
    """The type of ``value`` with its article, for a message: ``an int``, ``a NoneType``."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def as_path(value: Any, argument: str, *, expected: str = "a file or folder path") -> Path:
    """``value`` as a :class:`~pathlib.Path`: a ``str`` or an ``os.PathLike`` naming one, not empty.

    Anything else (``None``, a number, bytes, a list) is a :class:`ConfigError` naming ``argument`` (e.g.
    ``"ingest: path"``) and ``expected`` (what the path should be, e.g. ``"the zarr store to write"``).
    """
    given = value
    if isinstance(value, os.PathLike) and not isinstance(value, Path):
        try:
            value = os.fspath(value)
        except TypeError:
            value = None
    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        kind = "bytes (decode them to str first)" if isinstance(given, (bytes, bytearray)) else a_type(given)
        raise ConfigError(f"{argument}={given!r:.80} is {kind}; expected {expected} as a str or pathlib.Path")
    if not text.strip():
        raise ConfigError(f"{argument}={given!r} is empty; expected {expected}")
    if "\0" in text:
        raise ConfigError(f"{argument}={given!r:.80} holds a NUL character; expected {expected}")
    return Path(text)


def count(value: Any, argument: str, *, minimum: int = 1, what: str = "") -> int:
    """``value`` as an ``int`` of at least ``minimum`` (numpy integers accepted; booleans, floats, strings and
    ``None`` refused with a :class:`ConfigError` naming ``argument``; ``what`` says what it counts)."""
    tail = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{argument}={value!r:.80} is {a_type(value)}; expected an integer >= "
                          f"{minimum}{tail}")
    if value < minimum:
        raise ConfigError(f"{argument}={value!r}; expected an integer >= {minimum}{tail}")
    return int(value)


def positive_number(value: Any, argument: str, *, what: str = "") -> float:
    """``value`` as a finite ``float`` > 0 (booleans, strings, NaN, infinities, zero and below refused with a
    :class:`ConfigError` naming ``argument``; ``what`` says what it measures, e.g. ``"seconds between polls"``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
        and float(value) > 0
    if not ok:
        raise ConfigError(f"{argument}={value!r:.80}; expected a finite number > 0{f' ({what})' if what else ''}")
    return float(value)


def check_polling(poll_seconds: Any, max_polls: Any, *,
                  names: tuple[str, str] = ("poll_seconds", "max_polls")) -> None:
    """The polling arguments of a nowcast runner (``names``: as the caller spells them, e.g. ``--poll``):
    ``poll_seconds`` a finite number of seconds > 0 (none or a negative one would poll back to back) and
    ``max_polls`` an integer >= 1 or None (one below would stop before the first poll)."""
    positive_number(poll_seconds, names[0], what="seconds between polls")
    if max_polls is not None:
        count(max_polls, names[1], what="polls before the runner stops")


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """A number of bytes for a message: ``512 bytes``, ``3.6 TiB``."""
    if not math.isfinite(n):
        return "an unbounded amount"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_fits(need: float, what: str, *, expected: str, error: type[Exception] = ConfigError) -> None:
    """Refuse (``error``, a :class:`ConfigError` by default) what would need more than this machine's memory:
    the message says ``what`` it is, how much it would need and how much there is, and what was ``expected``."""
    have = memory_bytes()
    if have is not None and need > have:
        raise error(f"{what} cannot fit: it would need about {format_bytes(need)} of memory, more than this "
                    f"machine's {format_bytes(have)}; expected {expected}")
