"""Option groups: one frozen object where the same keyword list would repeat from function to function.

Each group is a frozen dataclass in the module that owns its concern: :class:`geostp.forecast.ForecastOptions`
(how a forecast runs), :class:`geostp.plot.style.MapStyle` (how a map looks) and
:class:`geostp.stream.options.LoaderOptions` (how batches are read and served), after the model of
:class:`geostp.evaluate.Verification`.  A public function keeps its keywords and also takes the object;
:func:`option_group` turns the two into the one object that the layers below receive.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationInfo, field_validator

from geostp.errors import ConfigError

__all__ = ["option_group", "settings_from_arguments", "number_only", "expectation", "NumbersNotBools"]

T = TypeVar("T")


@cache
def _defaults(func: Callable[..., Any]) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays, whose == is elementwise
        return False


def option_group(func: Callable[..., Any], given: T | None, cls: type[T], argname: str, **keywords: Any) -> T:
    """The option group a call of ``func`` means: ``given`` (a ``cls``), or one built from ``keywords``.

    ``keywords`` are the call's values of some of ``cls``'s fields, under the fields' names.  Without
    ``given`` they make the object (so ``func``'s own defaults hold).  With it, a keyword left at ``func``'s
    default defers to the object, and one set to a value the object does not hold is a ConfigError: which
    of the two was meant cannot be told.
    """
    if given is None:
        return cls(**keywords)
    if not isinstance(given, cls):
        raise ConfigError(f"{func.__qualname__}: {argname}= must be a {cls.__name__}, got {type(given).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(keywords) - names)
    if unknown:  # a programming error in geostp, not the user's
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    defaults = _defaults(func)
    asked = cls(**keywords)  # validates and normalises the keywords as the fields would hold them
    plain = cls(**{k: defaults[k] for k in keywords})
    clash = [k for k in keywords
             if not _same(getattr(asked, k), getattr(plain, k)) and not _same(getattr(asked, k), getattr(given, k))]
    if clash:
        shown = ", ".join(f"{k}={keywords[k]!r} (the {cls.__name__} has {getattr(given, k)!r})" for k in clash)
        raise ConfigError(f"{func.__qualname__}: {argname}= and conflicting keyword(s) {shown}; set them in the "
                          f"{cls.__name__} (dataclasses.replace({argname}, ...)) or leave the keyword(s) out")
    return given


def expectation(field: Any) -> str:
    """What a pydantic field accepts, in words: ``an integer >= 1``, ``a finite number > 0 or None``."""
    text = str(field.annotation)
    kind = "an integer" if "int" in text and "float" not in text else "a number" if "float" in text else \
        "True or False" if "bool" in text else "a string" if "str" in text else "a value"
    bounds = []
    for rule in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(rule, attr, None) is not None:
                bounds.append(f"{sign} {getattr(rule, attr)}")
        if getattr(rule, "allow_inf_nan", None) is False and kind == "a number":
            kind = "a finite number"
    if "Literal[" in text:
        kind = "one of " + ", ".join(repr(v) for v in getattr(field.annotation, "__args__", ()))
    optional = " or None" if "None" in text else ""
    return kind + (" " + " and ".join(bounds) if bounds else "") + optional


def number_only(field: Any) -> bool:
    """Whether a pydantic field holds an integer or a number (or None), never True or False."""
    args = get_args(field.annotation) or (field.annotation,)
    types = {a for a in args if isinstance(a, type)}
    return len(types) == len(args) and bool(types & {int, float}) and bool not in types


def settings_from_arguments(cls: type[T], function: str, values: dict[str, Any], *,
                            names: dict[str, str] | None = None) -> T:
    """``cls(**values)``: pydantic settings built from the keyword arguments of the public ``function``.

    Where pydantic refuses a value, the :class:`~pydantic.ValidationError` becomes one :class:`ConfigError`
    naming each refused argument as ``function`` spells it (``names`` maps a field of ``cls`` to the argument's
    name where they differ), the value given and what is expected.  The one place API arguments become
    pydantic settings, so that no ValidationError reaches a user.
    """
    from pydantic import ValidationError

    fields_ = getattr(cls, "model_fields", {})
    flags = [k for k, v in values.items() if isinstance(v, bool) and k in fields_ and number_only(fields_[k])]
    if flags:  # pydantic's lax mode would take True for 1: refused, as geostp's own checks refuse it
        names = names or {}
        raise ConfigError(f"{function}: " + "; ".join(
            f"{names.get(k, k)}={values[k]!r} is a bool; expected {expectation(fields_[k])}" for k in flags))
    try:
        return cls(**values)
    except ValidationError as exc:
        names = names or {}
        fields_ = getattr(cls, "model_fields", {})
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else None
            if field is None or field not in fields_:  # a rule over several arguments
                problems.append(f"{err['msg'].removeprefix('Value error, ')}")
                continue
            argument = names.get(field, field)
            value = values.get(field, err.get("input"))
            problems.append(f"{argument}={value!r}: {err['msg'].removeprefix('Value error, ')}; expected "
                            f"{expectation(fields_[field])}")
        raise ConfigError(f"{function}: " + "; ".join(problems)) from None


class NumbersNotBools(BaseModel):
    """A pydantic model whose number fields refuse True and False (pydantic's lax mode takes them for 1 and 0):
    ``batch_size: true`` in a recipe is a mistake to name, not a batch of one, as it is for the API's arguments
    (:func:`settings_from_arguments`)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and number_only(field):
            raise ValueError(f"{str(value).lower()} is a bool; expected {expectation(field)}")
        return value
