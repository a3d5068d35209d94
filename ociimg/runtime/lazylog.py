"""``logging.getLogger(name)`` for the runtime, without importing :mod:`logging`.

Importing logging pulls in traceback, linecache, tokenize, threading, string and
weakref, at every ``ociimg-runtime`` start, although a normal run logs nothing. Whoever
owns the output redirects the runtime's messages with :func:`redirect`: the CLI to
``--log``/stderr, the container init to the list it sends to the parent. The init must
not import anything after pivot_root (init.py), so a redirected message never touches
logging. Without a redirect (library use, tests) messages go to
``logging.getLogger(name)`` as before."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_route: dict = {"sink": None, "min": 30}


def redirect(sink: Callable[[str, str], None] | None, level: str = "warning") -> None:
    """Send messages of ``level`` and above to ``sink(level, text)``; None: to logging."""
    _route["sink"], _route["min"] = sink, LEVELS[level]


class LazyLogger:
    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger = None

    def _emit(self, level: str, msg: str, args: tuple) -> None:
        sink = _route["sink"]
        if sink is not None:
            if LEVELS[level] >= _route["min"]:
                sink(level, msg % args if args else msg)
            return
        if self._logger is None:
            import logging
            self._logger = logging.getLogger(self.name)
        getattr(self._logger, level)(msg, *args)

    def debug(self, msg: str, *args: object) -> None:
        self._emit("debug", msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._emit("info", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._emit("warning", msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._emit("error", msg, args)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
