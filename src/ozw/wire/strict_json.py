"""Reading a frame's JSON text: JSON as the RFC has it, problems in one line.

Python's ``json`` accepts ``NaN`` and ``Infinity``, turns ``1e999`` into infinity and
explains an over-long integer with a lecture; here each is a ``ValueError`` saying
what is wrong. The decoder is made once (``json.loads`` with hooks builds one per
call, which costs more than the checks).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # e.g. 1e999: not a usable number
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _refuse_constant(name: str) -> Any:
    # Nothing good comes from a NaN CPU limit.
    raise ValueError(f"{name} is not valid JSON")


# Integers parse in C without a hook (a call per integer would cost more than the
# rest of the checks); their one failure is reworded in loads().
_DECODER: Final = json.JSONDecoder(parse_float=_parse_float, parse_constant=_refuse_constant)
_TOO_MANY_DIGITS: Final = re.compile(r"value has (\d+) digits")


def loads(text: str | bytes) -> Any:
    """Parse one JSON text (bytes are read as ``json.loads`` reads them).

    Raises:
        ValueError: the text is not JSON; the message is one line, without a prefix.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        return _DECODER.decode(text)
    except UnicodeDecodeError:  # a ValueError too, but its text is about codecs
        raise ValueError("not valid UTF-8") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        # An integer past sys.get_int_max_str_digits().
        digits = _TOO_MANY_DIGITS.search(str(exc))
        if digits is not None:
            raise ValueError(f"number out of range: {digits[1]} digits") from None
        raise
