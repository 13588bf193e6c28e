"""Strict reading of config files: every key must be a field, every value of its field's type.

A typo that is silently ignored costs hours (``n_layr: 2`` in a model config trained the default
12 layers), so tonsai refuses unknown keys and names the closest valid one (``difflib``'s
similarity ratio, as git and argparse do for misspelled commands). Values read from YAML or JSON
are checked against the dataclass's type hints here because dataclasses do not check types and
argparse only checks flags. One YAML quirk is allowed: PyYAML reads ``1e-3`` (no dot) as a string
(YAML 1.1), so a float field also takes a string that Python's ``float()`` reads; any other
string for a number is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Iterable


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``valid``, or ``""`` when none is close."""
    match = difflib.get_close_matches(str(name), sorted(set(valid)), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def unknown_keys_message(keys: Iterable[str], valid: Iterable[str], what: str = "key") -> str | None:
    """One line naming every unknown key with its closest valid name, or None when all are known."""
    valid = set(valid)
    unknown = [k for k in keys if k not in valid]
    if not unknown:
        return None
    return "; ".join(f"unknown {what} {k!r}{did_you_mean(k, valid)}" for k in unknown)


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "the string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if kind not in ("a list", "a mapping", "null") else kind


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def check_value(name: str, value: Any, tp: Any, choices: Iterable[Any] | None = None) -> Any:
    """``value`` as a value of type ``tp`` for the field ``name``; ValueError saying what was expected.

    Handles the types stage configs use: bool, int, float, str, list[...] and ``X | None``; other
    types pass unchecked."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: expected a value, got null")
    if tp is bool:
        ok = isinstance(value, bool)
        want = "true or false"
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        want = "a number"
    elif tp is str:
        ok = isinstance(value, str)
        want = "a string (quote it in YAML)"
    elif typing.get_origin(tp) in (list, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{name}: expected a list (YAML: [a, b] or one '- item' per line), got {_describe(value)}")
        (item,) = typing.get_args(tp)[:1]
        return [check_value(f"{name}[{i}]", v, item, choices) for i, v in enumerate(value)]
    else:
        return value
    if not ok:
        raise ValueError(f"{name}: expected {want}, got {_describe(value)}")
    if choices is not None and value not in list(choices):
        choices = list(choices)
        raise ValueError(f"{name}: {value!r} is not one of {choices}{did_you_mean(str(value), map(str, choices))}")
    return value


def check_fields(data: dict, cls: type, what: str = "option") -> dict:
    """``data`` (from a config file) checked against the init fields of the dataclass ``cls``: unknown
    keys name their closest field, values are checked with :func:`check_value` (``choices`` from
    the field's metadata). Raises ValueError with every problem found."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    problems = []
    unknown = unknown_keys_message(data, fields, what)
    if unknown:
        problems.append(unknown)
    out = {}
    for key, value in data.items():
        if key not in fields:
            continue
        try:
            out[key] = check_value(key, value, hints[key], fields[key].metadata.get("choices"))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))
    return out
