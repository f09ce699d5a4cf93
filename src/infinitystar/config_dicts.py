"""Config dataclasses from JSON-like dicts: the one builder every config of the package goes through.

Model configs (``TransformerConfig``, ``VAEConfig``), the pipeline's ``PipelineConfig`` and both
trainers' recipes are dataclasses read from JSON. :func:`from_dict` builds any of them from a dict,
guided by the field annotations:

- nested dataclass fields (sections) are built from nested objects; an ``Optional`` section may be null;
- keys the dataclass does not have are errors that name the full dotted path and list the accepted keys;
- values are checked against the annotations (``str``, ``int``, ``float``, ``bool``, ``Optional``,
  unions, ``Literal``, ``tuple[...]``, ``list[...]``, ``dict``) before the dataclass sees them, so a
  recipe value of the wrong type is reported by its key (``optim.lr must be a number, got 'fast'``)
  instead of failing later in a comparison with a message that names neither key nor value;
- JSON has no tuples and no distinction between 1 and 1.0: lists become tuples where the annotation is
  a tuple, and integers are accepted (as floats) where a float is expected. ``true`` is not an integer.

The ``--set key.path=value`` overrides of both training CLIs live here too (:func:`parse_override`,
:func:`apply_overrides`). Everything here is plain Python: models import it, and it imports nothing of
the package.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["ConfigError", "from_dict", "describe", "apply_overrides", "parse_override"]

_UNIONS = (typing.Union, types.UnionType)
_NONE = type(None)
#: (singular, plural) names of the scalar types, as a recipe author reads them
_SCALARS: dict[Any, tuple[str, str]] = {
    bool: ("a boolean (true or false)", "booleans (true or false)"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    _NONE: ("null", "nulls"),
}


class ConfigError(ValueError):
    """A config dict that does not fit its dataclass (unknown key, wrong type, missing key)."""


def from_dict(cls: type, data: Any, *, what: str | None = None, where: str = ""):
    """The dataclass ``cls`` built from ``data`` (a dict of its fields; missing keys keep their defaults).

    ``what`` names the config in error messages ("training config"; default: the class name).
    ``where`` is the dotted path of ``data`` inside a larger config ("model.overrides"), so that errors
    name the key as the user wrote it. Raises :class:`ConfigError` (a ``ValueError``); the dataclass's
    own ``__post_init__`` checks raise their own errors unchanged.
    """
    return _convert(cls, data, what or cls.__name__, where)


def describe(hint: Any, plural: bool = False) -> str:
    """What a value of annotation ``hint`` looks like in JSON: 'a number', 'a list of 2 numbers or null'."""
    if hint in _SCALARS:
        return _SCALARS[hint][plural]
    if hint is Any:
        return "any values" if plural else "any value"
    if dataclasses.is_dataclass(hint):
        return f"{'objects' if plural else 'an object'} of {hint.__name__} fields"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in _UNIONS:
        parts = [describe(a, plural) for a in args]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin in (list, tuple) or hint in (list, tuple):
        noun = "lists" if plural else "a list"
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"{noun} of {len(args)} {describe(args[0], True)}"
            return f"{noun} [{', '.join(describe(a) for a in args)}]"
        return f"{noun} of {describe(args[0], True)}" if args else noun
    if origin is dict or hint is dict:
        return "objects" if plural else "an object"
    name = getattr(hint, "__name__", str(hint))
    return f"{name} values" if plural else f"a {name}"


# ----------------------------------------------------------------------------------------------------------------------
# The builder


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # the configs use ``from __future__ import annotations``: their annotations are strings until resolved
    return typing.get_type_hints(cls)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _build(cls: type, data: Mapping, what: str, path: str):
    """``cls(**kwargs)`` from a mapping: unknown and missing keys named, every value converted."""
    params = [f for f in dataclasses.fields(cls) if f.init]
    known = sorted(f.name for f in params)
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        scope = f"accepted in {path}" if path else "accepted"
        raise ConfigError(f"unknown {what} key(s) {[_join(path, k) for k in unknown]}; {scope}: {known}")
    missing = [
        f.name
        for f in params
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{what}: missing required key(s) {[_join(path, k) for k in missing]}")
    hints = _hints(cls)
    kwargs = {name: _convert(hints[name], value, what, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a check in __post_init__ tripping over a value the annotations allow
        raise ConfigError(f"invalid {what}{' section ' + path if path else ''}: {exc}") from exc


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the outer shape of ``hint`` (elements and fields are checked by :func:`_convert`)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, Mapping))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin in _UNIONS:
        return any(_fits(a, value) for a in typing.get_args(hint))
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this builder does not interpret: passed through unchecked


def _convert(hint: Any, value: Any, what: str, path: str):
    """``value`` checked against ``hint`` and converted (sections built, lists to tuples, ints to floats)."""
    if not _fits(hint, value):
        raise _wrong_type(hint, value, what, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        arm = next(a for a in args if _fits(a, value))  # the first alternative of the right shape
        return _convert(arm, value, what, path)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, what, path)
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _wrong_type(hint, value, what, path)
            items = [_convert(a, v, what, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            items = [_convert(args[0], v, what, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint in (list, tuple):
        return hint(value)
    if origin is dict and len(args) == 2:
        return {k: _convert(args[1], v, what, _join(path, k)) for k, v in value.items()}
    if hint is dict:
        return dict(value)
    return value


def _wrong_type(hint: Any, value: Any, what: str, path: str) -> ConfigError:
    msg = f"{what}: {path or 'the config'} must be {describe(hint)}, got {_show(value)}"
    if isinstance(value, str):  # "100" for 100, "true" for true: the quotes are the mistake
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = value
        if not isinstance(decoded, str) and _fits(hint, decoded):
            msg += f" (a string: write {value} without quotes)"
    return ConfigError(msg)


# ----------------------------------------------------------------------------------------------------------------------
# Command-line overrides


def apply_overrides(d: dict, overrides: dict[str, Any]) -> dict:
    """A copy of the recipe dict with dotted-path values replaced (``{"optim.lr": 1e-4}``).

    Setting a key inside a section that is null in the recipe (e.g. ``data.synthetic.seed``)
    creates the section.
    """
    out = json.loads(json.dumps(d))  # deep copy of plain JSON data
    for path, value in overrides.items():
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` with a JSON value (bare words are strings): ``optim.lr=1e-4``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key.path=value (e.g. optim.lr=1e-4), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
