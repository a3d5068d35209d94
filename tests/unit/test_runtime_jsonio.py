"""runtime.jsonio: the same results as json (it drives the same C scanner/encoder)."""

from __future__ import annotations

import json
import math

import pytest

from ociimg.runtime import jsonio

DOCS = [
    {}, [], 0, -1.5e300, "é\u2028\x00\"\\", True, None,
    {"ociVersion": "1.2.0", "process": {"args": ["sh", "-c", "echo 'hi' \u00fc"],
                                       "env": ["A=1"], "rlimits": [{"soft": 1 << 40}]},
     "linux": {"resources": {"cpu": {"shares": 1024, "quota": -1}}, "b": [1, [2, [3]]]},
     "z": 0.1, "a": [None, False, 1e-7]},
    {"e": {}, "l": [[], [{}], ["t", 1]], "n": {"d": {"e": [math.inf]}}},
]


@pytest.mark.parametrize("doc", DOCS)
def test_dumps_matches_json(doc: object) -> None:
    assert jsonio.dumps(doc) == json.dumps(doc)
    assert jsonio.dumps(doc, sort_keys=True, separators=(",", ":")) == \
        json.dumps(doc, sort_keys=True, separators=(",", ":"))
    for options in ({"indent": 2}, {"indent": 0, "sort_keys": True}, {"indent": "\t"},
                    {"indent": 1, "separators": (",", ":")}):
        assert jsonio.dumps(doc, **options) == json.dumps(doc, **options), options


def test_indented_tuples_and_keys_that_are_not_strings_like_json() -> None:
    doc = {1: {True: None}, "a": (1.5, ("t",))}
    assert jsonio.dumps(doc, indent=2) == json.dumps(doc, indent=2)


@pytest.mark.parametrize("doc", DOCS)
def test_loads_round_trips(doc: object) -> None:
    text = json.dumps(doc)
    assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(f" \n\t{text}\r\n".encode()) == doc


def test_specials_like_json() -> None:
    assert math.isnan(jsonio.loads("NaN")) and jsonio.loads("[-Infinity]") == [-math.inf]
    assert jsonio.dumps([math.inf]) == json.dumps([math.inf])


@pytest.mark.parametrize("text", ["", " ", "{", "[1,]", '{"a" 1}', "1 2", '"\x01"', "tru",
                                  '{"a": 1}}', b"\xff"])
def test_malformed_input_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsonio.loads(text)


def test_unserializable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonio.dumps({"a": {1}})
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonio.dumps({"a": [{1}]}, indent=2)
