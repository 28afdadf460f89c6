"""One-line errors for bundle runs: ``python -m monai.bundle run`` prints a user's data or config mistake as a long
traceback through MONAI's config machinery, with the message that matters buried in the middle.

A bundle's ``"initialize"`` list installs :func:`install` (``"$monai_dpaat.error_hook.install()"``). From then on,
an uncaught exception whose innermost cause is a :data:`USER_ERRORS` raised by ``monai_dpaat``'s own checks (a
missing file, a bad label, a budget above the value range, a held run lock ...) is printed as ``error: <message>``
on one line and the process exits with status 1; any other exception (a bug) keeps its full traceback, and
``MONAI_DPAAT_DEBUG=1`` shows the traceback for every error.
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


def _root_cause(err: BaseException) -> BaseException:
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
        if nxt is None:
            return err
        err = nxt
    return err


def _raised_in_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def user_error_of(err: BaseException) -> BaseException | None:
    """The user error at the root of ``err``'s chain (see the module docstring), or None for anything else."""
    root = _root_cause(err)
    if isinstance(root, USER_ERRORS) and _raised_in_package(root):
        return root
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
