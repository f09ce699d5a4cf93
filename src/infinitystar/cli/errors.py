"""How the command line reports what went wrong: one line for a user's mistake, a traceback for a bug.

- A mistake (a bad argument, file, prompt, recipe, checkpoint or environment) is a ``ValueError`` (every checked
  error of the package derives from it), a ``FileNotFoundError``, or an ``OSError`` a user can fix (disk full, no
  permission): ``infinitystar: error: MESSAGE``, exit status 2.
- Ctrl-C: ``infinitystar: interrupted``, exit status 130; outputs are written atomically, so no half-written file
  is left, and the command says how to continue where that makes sense.
- Anything else is a bug: its traceback is shown (as it is for every error with ``--debug`` or
  ``INFINITYSTAR_DEBUG=1``).
- Warnings (a snapped duration, a guidance scale far out of range, a prompt that was not UTF-8) are one line each,
  ``infinitystar: warning: MESSAGE``, each message once per command.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

USAGE_STATUS = 2
INTERRUPT_STATUS = 130


@dataclass
class Outcome:
    status: int = 0


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a user's mistake, or None for an error that is a bug."""
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc)
    if isinstance(exc, OSError):
        from infinitystar.cli.outputs import write_error_message

        return write_error_message(exc)
    return None


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings as ``infinitystar: warning: ...``, each distinct message once."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text in shown:
            return
        shown.add(text)
        label = "warning" if issubclass(category, UserWarning) else category.__name__
        print(f"infinitystar: {label}: {text}", file=sys.stderr)

    with warnings.catch_warnings():  # restores showwarning on the way out; the filters are left as they are
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def report_errors(debug: bool, hint: Callable[[], str | None]) -> Iterator[Outcome]:
    """Run a command's body; turn its errors into messages and exit statuses (see the module docstring)."""
    outcome = Outcome()
    try:
        if debug:
            yield outcome
        else:
            with one_line_warnings():
                yield outcome
    except KeyboardInterrupt:
        if debug:
            raise
        more = hint()
        print(
            f"\ninfinitystar: interrupted (Ctrl-C); no half-written file was left{'; ' + more if more else ''}",
            file=sys.stderr,
        )
        outcome.status = INTERRUPT_STATUS
    except Exception as exc:
        message = user_error_message(exc)
        if debug or message is None:
            raise
        if getattr(exc, "rank", 0) == 0:  # an error every rank of a parallel run raises alike: printed by rank 0
            print(f"infinitystar: error: {message}", file=sys.stderr)
        outcome.status = USAGE_STATUS
