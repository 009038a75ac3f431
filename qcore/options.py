"""Typed option schemas: how a recipe entry's plain data is checked against an attrs class.

An algorithm declares its options as an attrs class (types, defaults,
validators, ``metadata={"help": ...}``); the recipe validator checks every
entry against it generically, so each problem is reported with its path and
line and a did-you-mean for misspelt names, and no algorithm parses YAML.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from qcore.errors import SpecError


def option_help(options: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of each option of an options class, for listings."""
    out = []
    for field in attrs.fields(attrs.resolve_types(options)):
        default = field.default if field.default is not attrs.NOTHING else None
        out.append((field.name, _type_name(field.type), default, field.metadata.get("help", "")))
    return out


def parse_options(options: type, data: Mapping[str, Any], *, also_known: Sequence[str] = ()
                  ) -> tuple[Any, list[tuple[str, str]]]:
    """(options instance or None, [(option name or '', problem)]) for the plain data of one recipe entry.

    `data` holds only the schema's own options; `also_known` names keys the
    caller handles itself (listed among the known ones in messages).
    """
    fields = attrs.fields_dict(attrs.resolve_types(options))
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            names = [*fields, *also_known]
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(names)
            problems.append((str(key), f"unknown option {key!r}; known: {known}{hint}"))
            continue
        converted, problem = _convert(value, field.type)
        if problem:
            problems.append((key, problem))
            continue
        if field.validator is not None:
            try:
                field.validator(None, field, converted)
            except (ValueError, TypeError, SpecError) as exc:
                problems.append((key, str(exc)))
                continue
        values[key] = converted
    problems += [(name, "required") for name, field in fields.items()
                 if field.default is attrs.NOTHING and name not in data]
    if problems:
        return None, problems
    try:
        return options(**values), []
    except (ValueError, TypeError, SpecError) as exc:
        return None, [("", str(exc))]


_BAD = object()


def _convert(value: Any, kind: Any) -> tuple[Any, str]:
    """`value` as the option type `kind`, or a problem text."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        alternatives = typing.get_args(kind)
        if value is None and type(None) in alternatives:
            return None, ""
        for alt in alternatives:
            if alt is type(None):
                continue
            converted, problem = _convert(value, alt)
            if not problem:
                return converted, ""
        return _BAD, f"expected {_type_name(kind)}, got {_describe(value)}"
    if origin is Literal:
        choices = typing.get_args(kind)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value, ""
        return _BAD, f"expected one of {', '.join(map(repr, choices))}, got {_describe(value)}"
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(value, list):
            return _BAD, f"expected a list of {_type_name(item)}, got {_describe(value)}"
        converted = []
        for i, v in enumerate(value):
            c, problem = _convert(v, item)
            if problem:
                return _BAD, f"item {i}: {problem}"
            converted.append(c)
        return tuple(converted), ""
    if isinstance(kind, type) and attrs.has(kind):
        if not isinstance(value, dict):
            return _BAD, f"expected a mapping with keys {', '.join(attrs.fields_dict(kind))}, got {_describe(value)}"
        parsed, problems = parse_options(kind, value)
        return (parsed, "") if not problems else (_BAD, "; ".join(f"{k}: {p}" if k else p for k, p in problems))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), ""
    if kind in (int, str, bool) and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value, ""
    return _BAD, f"expected {_type_name(kind)}, got {_describe(value)}"


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {float: "a number", int: "an integer", str: "a string", bool: "a boolean (true/false)",
            type(None): "null"}.get(kind, getattr(kind, "__name__", str(kind)))


def _describe(value: Any) -> str:
    kind = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value))
    return kind or f"{type(value).__name__} {value!r}"
