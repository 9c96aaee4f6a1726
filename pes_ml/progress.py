"""Progress reporting that stage functions can call without knowing about terminals.

Stage functions take an optional :class:`Progress` callback; the CLI passes one
that draws a rich progress bar on a terminal, and logs plain lines otherwise.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called by long-running stages: ``start`` once per step, then ``advance``."""

    def start(self, description: str, total: float | None = None) -> None: ...

    def advance(self, amount: float = 1.0) -> None: ...


class NoProgress:
    """The default: report nothing."""

    def start(self, description: str, total: float | None = None) -> None:
        return None

    def advance(self, amount: float = 1.0) -> None:
        return None
