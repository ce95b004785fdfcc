"""The one JSON parser for what clients send: API bodies and Socket.IO packets. Imports no Flask.

`loads` accepts strict RFC 8259 JSON and refuses, with `JSONError` (a ValueError), what the
standard library would let through or choke on:

- nesting deeper than MAX_DEPTH arrays/objects (the standard parser recurses: about 1,000
  levels, a 2 KB body, raise RecursionError), checked on the text before parsing;
- numbers of more than MAX_NUMBER_LENGTH characters (int() of thousands of digits is slow, and
  refused at 4,300), numbers too large for a float, and NaN / Infinity;
- an object with the same key twice (which value would win is up to each parser);
- text that is not UTF-8, or escapes that are not Unicode (a lone surrogate such as "\\ud800"
  cannot be stored or hashed).

The module has `dumps` too, so it can stand in for `json` where a library takes a JSON module
(python-socketio's `json=`).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from json import dumps as dumps

MAX_DEPTH = 32
MAX_NUMBER_LENGTH = 100

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONError(ValueError):
    """Input that is not acceptable JSON; the message says why in one line."""


def loads(text: str | bytes | bytearray) -> object:
    """Parse `text` (bytes must be UTF-8) under the rules above."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError("not valid UTF-8") from None
    if nesting_depth(text) > MAX_DEPTH:
        raise JSONError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant,
                           object_pairs_hook=_object)
    except JSONError:
        raise
    except ValueError as exc:
        raise JSONError(str(exc)) from None
    if _SURROGATE_ESCAPE.search(text):
        try:  # only a lone surrogate makes this fail
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JSONError("a \\u escape that is not a Unicode character (a lone surrogate)") \
                from None
    return value


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual case: cannot be deeper
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _int(token: str) -> int:
    if len(token) > MAX_NUMBER_LENGTH:
        raise JSONError(f"a number longer than {MAX_NUMBER_LENGTH} characters")
    return int(token)


def _float(token: str) -> float:
    if len(token) > MAX_NUMBER_LENGTH:
        raise JSONError(f"a number longer than {MAX_NUMBER_LENGTH} characters")
    value = float(token)
    if math.isinf(value):
        raise JSONError("a number too large for a float")
    return value


def _constant(token: str):
    raise JSONError(f"{token} is not JSON")


def _object(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise JSONError(f"duplicate key {duplicate[:64]!r}")
    return value
