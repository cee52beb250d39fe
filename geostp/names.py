"""Names that become file names: a recipe's ``name`` (its run folder ``runs/<name>``), a registered model's name
(the model store's ``<model>-<key>.pt``), a variable name.

Such a name must be one plain file-name component: no path separator, no ``..``, no control character, not empty
and not too long for a file system.  Otherwise ``runs/../../x`` would write outside ``runs/``.  :func:`plain_name`
checks one and raises a :class:`~geostp.errors.ConfigError` naming the key and what was expected.
"""

from __future__ import annotations

import os
import unicodedata

from geostp.errors import ConfigError

__all__ = ["plain_name", "name_problem", "MAX_NAME_BYTES"]

#: The longest file-name component most file systems accept (bytes of UTF-8).
MAX_NAME_BYTES = 255

_SEPARATORS = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}

#: Bidirectional overrides and isolates: they make a name display as another (``evil\u202egnp.pt``).
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}

EXPECTED = ("expected a plain name: one file-name component, without a path separator ('/' or '\\'), "
            "without '..' and without control characters")


def name_problem(value: object) -> str | None:
    """What makes ``value`` unusable as one file-name component (a short phrase), or None if it is fine."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not value.strip():
        return "is empty"
    sep = next((s for s in sorted(_SEPARATORS) if s in value), None)
    if sep is not None:
        return f"holds the path separator {sep!r}"
    if ".." in value or value == ".":
        return "holds '..'" if ".." in value else "is '.', the current folder"
    control = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI), None)
    if control is not None:
        return f"holds the control character {control!r}"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def plain_name(value: object, key: str, *, where: str = "", why: str = "") -> str:
    """``value`` if it is one plain file-name component; else a :class:`~geostp.errors.ConfigError` whose message
    starts with ``where`` (a recipe file, say) and names ``key``, the value, what is wrong and what was expected
    (``why``: what the name becomes, e.g. "the run's folder runs/<name>")."""
    problem = name_problem(value)
    if problem is None:
        return value  # type: ignore[return-value]
    head = f"{where}: {key}" if where else key
    tail = f" ({why})" if why else ""
    raise ConfigError(f"{head}: {value!r} {problem}; {EXPECTED}{tail}")
