"""The progress protocol stages report to; the CLI decides how to render it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, key: str, description: str, total: int | None) -> None: ...
    def advance(self, key: str, amount: int) -> None: ...
    def done(self, key: str, message: str | None = None) -> None: ...
    def log(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing: the default for library callers."""

    def start(self, key: str, description: str, total: int | None) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def done(self, key: str, message: str | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        pass
