"""Page inputs that pass what a person typed to the demo's own checks, instead of refusing it themselves.

gradio's number, slider and dropdown components check bounds and choices before a handler runs; a value out of
bounds (typed into a slider's number box or the seed box, sent through the API) then fails inside gradio, which
prints a traceback into the server log and shows its own terse message. :func:`lenient` makes one component hand
the raw value on (it looks and behaves the same in the page), so that :mod:`infinitystar.app.checks` refuses it with
a message that names the input and what is accepted, and the server log stays clean.

Done per instance, not with a subclass: gradio's component metaclass looks up a subclass's source file to write
type stubs next to it, which a package must not have done to it at import time.
"""

from __future__ import annotations

import types
from typing import Any, TypeVar

T = TypeVar("T")


def _raw_value(self, payload: Any) -> Any:
    return payload


def lenient(component: T) -> T:
    """``component`` with a ``preprocess`` that returns the page's value unchecked (the handler checks it)."""
    component.preprocess = types.MethodType(_raw_value, component)  # type: ignore[attr-defined]
    return component
