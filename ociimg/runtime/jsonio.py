"""JSON for the runtime, through the C scanner and encoder the ``json`` package itself uses.

``import json`` compiles regular expressions at import, which loads ``re`` and with it
enum, functools and collections: ~2.3 ms of every ``ociimg-runtime`` start, and the
runtime only needs compact loads/dumps. Indented output (``state``, ``features``) and
interpreters without ``_json`` go through ``json`` itself, so the bytes are the same.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms of every runtime start
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Decoder:
    """The attributes _json.make_scanner reads (json.JSONDecoder's defaults)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Decoder()) if _json is not None else None


def loads(data: str | bytes) -> Any:
    """Like json.loads (ValueError on malformed input); bytes are UTF-8."""
    if _scan is None:
        import json
        return json.loads(data)
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def _not_serializable(obj: object) -> None:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any, *, indent: int | None = None, sort_keys: bool = False,
          separators: tuple[str, str] | None = None) -> str:
    """Like json.dumps with those options (same output)."""
    if indent is not None or _json is None:
        import json
        return json.dumps(obj, indent=indent, sort_keys=sort_keys, separators=separators)
    item_separator, key_separator = separators or (", ", ": ")
    encode = _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                key_separator, item_separator, sort_keys, False, True)
    return "".join(encode(obj, 0))
