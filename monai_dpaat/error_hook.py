"""One-line errors for bundle runs: ``python -m monai.bundle run`` prints a user's data or config mistake as a long
traceback through MONAI's config machinery, with the message that matters buried in the middle.

A bundle's ``"initialize"`` list installs :func:`install` (``"$monai_dpaat.error_hook.install()"``). From then on,
an uncaught exception whose chain holds a :data:`USER_ERRORS` raised by ``monai_dpaat``'s own checks (a missing
file, a bad label, a budget above the value range, a held run lock ...; see :func:`user_error_of`, which the CLI
uses too) is printed as ``error: <message>`` on one line and the process exits with status 1; any other
exception (a bug) keeps its full traceback, and ``MONAI_DPAAT_DEBUG=1`` shows the traceback for every error.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import TracebackType

__all__ = ["USER_ERRORS", "install", "user_error_of"]

USER_ERRORS = (ValueError, OSError, RuntimeError)  # what the package's input checks raise
PACKAGE = Path(__file__).resolve().parent


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``, else an unsuppressed ``__context__``),
    outermost first."""
    chain: list[BaseException] = []
    while err is not None and all(e is not err for e in chain):
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return chain


def _root_cause(err: BaseException) -> BaseException:
    return _chain(err)[-1]


def _raised_in_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def user_error_of(err: BaseException) -> BaseException | None:
    """The user error in ``err``'s chain, or None for anything else (a bug keeps its traceback).

    The one rule for unwrapping, used by bundle runs (:func:`install`) and the CLI: the outermost exception of
    the chain that is a :data:`USER_ERRORS` raised by ``monai_dpaat`` itself. MONAI's wrappers around it
    (``RuntimeError("applying transform ...")`` of each ``Compose``, the config parser's "Failed to evaluate")
    are skipped; so is what a package check was raised from (``raise ValueError("image 'x.jpg' ...") from
    err``: the check's message says it). A chain whose package errors are all bugs (``AttributeError``,
    ``KeyError``...) or that was raised outside the package gives None.
    """
    for item in _chain(err):
        if isinstance(item, USER_ERRORS) and _raised_in_package(item):
            return item
    return None


def install() -> None:
    """Install the one-line error printer as ``sys.excepthook`` (idempotent; keeps the previous hook for other
    exceptions). Does nothing when ``MONAI_DPAAT_DEBUG`` is set."""
    if os.environ.get("MONAI_DPAAT_DEBUG") or getattr(sys.excepthook, "_monai_dpaat", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        root = user_error_of(err)
        if root is None:
            previous(kind, err, tb)
            return
        message = " ".join(str(root).split()) or type(root).__name__
        print(f"error: {message} (MONAI_DPAAT_DEBUG=1 shows the traceback)", file=sys.stderr)

    hook._monai_dpaat = True  # type: ignore[attr-defined]
    sys.excepthook = hook
