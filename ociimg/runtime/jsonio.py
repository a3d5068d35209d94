"""JSON for the runtime, through the C scanner and encoder the ``json`` package itself uses
(``json`` is outside the start-up budget: ociimg/runtime/startup.py). Output is the bytes
``json.dumps`` writes with the same options; indented output (``state``) lays out
containers here and encodes every scalar and key with the C encoder. Interpreters
without ``_json``, and dict keys that are not strings, go through ``json`` itself.
"""

from __future__ import annotations

TYPE_CHECKING = False
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
    if _json is not None:
        if indent is None:
            return "".join(_encoder(separators or (", ", ": "), sort_keys)(obj, 0))
        try:
            return _dumps_indented(obj, indent, sort_keys, separators or (",", ": "))
        except _NotStringKey:
            pass
    import json
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, separators=separators)


def _encoder(separators: tuple[str, str], sort_keys: bool) -> Any:
    item_separator, key_separator = separators
    return _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                              key_separator, item_separator, sort_keys, False, True)


class _NotStringKey(Exception):
    pass


def _dumps_indented(obj: Any, indent: int | str, sort_keys: bool,
                    separators: tuple[str, str]) -> str:
    item_separator, key_separator = separators
    encode = _encoder((", ", ": "), False)
    pad = " " * indent if isinstance(indent, int) else indent
    out: list[str] = []

    def scalar(value: Any) -> str:
        return "".join(encode(value, 0))

    def walk(value: Any, depth: int) -> None:
        if isinstance(value, str) or not isinstance(value, (dict, list, tuple)):
            out.append(scalar(value))
            return
        is_dict = isinstance(value, dict)
        if not value:
            out.append("{}" if is_dict else "[]")
            return
        newline = "\n" + pad * (depth + 1)
        out.append("{" if is_dict else "[")
        items = (sorted(value.items()) if sort_keys else value.items()) if is_dict else value
        for i, item in enumerate(items):
            out.append((item_separator if i else "") + newline)
            if is_dict:
                key, item = item
                if not isinstance(key, str):
                    raise _NotStringKey
                out.append(scalar(key) + key_separator)
            walk(item, depth + 1)
        out.append("\n" + pad * depth + ("}" if is_dict else "]"))

    walk(obj, 0)
    return "".join(out)
