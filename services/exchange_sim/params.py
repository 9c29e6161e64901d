"""Request parameters read as Binance reads them, each malformed one refused with its error.

Binance checks the text of every parameter before using it: a decimal must match
``^([0-9]{1,20})(\\.[0-9]{1,20})?$`` and an integer ``^[0-9]{1,20}$`` (so NaN, inf, 1e400,
exponents, signs and spaces are all -1100 ILLEGAL_CHARS), a boolean is ``true`` or
``false`` (-1130), a mandatory parameter that is missing or empty is -1102, and a parameter
sent twice is -1101. The request's bytes must be ASCII (percent-encoded form data): any
other byte is -1100.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from services.exchange_sim.engine import SimError

Params = dict[str, str]
DECIMAL_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
INTEGER_RANGE = r"^[0-9]{1,20}$"
DECIMAL = re.compile(DECIMAL_RANGE)
INTEGER = re.compile(INTEGER_RANGE)
INT64_MAX = 2**63 - 1
DUPLICATE = SimError(-1101, "Duplicate values for a parameter detected.")


def illegal(name: str, legal: str) -> SimError:
    """Return Binance's -1100 for a parameter whose text is outside its legal range."""
    msg = f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    return SimError(-1100, msg)


def mandatory(name: str) -> SimError:
    """Return Binance's -1102 for a mandatory parameter missing, empty or malformed."""
    return SimError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def invalid(name: str) -> SimError:
    """Return Binance's -1130 for a parameter whose value is not one it takes."""
    return SimError(-1130, f"Data sent for parameter '{name}' is not valid.")


def ascii_text(raw: bytes) -> str:
    """Return request bytes as text; a byte outside ASCII is -1100 (form data is ASCII)."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise SimError(-1100, "Illegal characters found in a parameter.") from None


def parse(*raw_parts: str) -> Params:
    """Return the parameters of query and body; a name sent twice is -1101."""
    params: Params = {}
    for raw in raw_parts:
        for name, value in parse_qsl(raw, keep_blank_values=True):
            if name in params:
                raise DUPLICATE
            params[name] = value
    return params


def need(params: Mapping[str, str], name: str) -> str:
    """Return a mandatory parameter; missing or empty is -1102."""
    value = params.get(name)
    if not value:
        raise mandatory(name)
    return value


OVER_PRECISION = SimError(-1111, "Precision is over the maximum defined for this asset.")


def decimal(params: Mapping[str, str], name: str, places: int | None = None) -> float:
    """Return a mandatory decimal parameter (quantity, triggerPrice ...).

    With ``places``, more significant decimals than that (trailing zeros do not count) is
    -1111, as Binance judges the text: "0.0999999999" BTC is refused, not read as 0.1.
    """
    value = need(params, name)
    if not DECIMAL.match(value):
        raise illegal(name, DECIMAL_RANGE)
    if places is not None and len(value.partition(".")[2].rstrip("0")) > places:
        raise OVER_PRECISION
    return float(value)


def integer(params: Mapping[str, str], name: str) -> int | None:
    """Return an optional integer parameter (limit, startTime, orderId ...); absent: None."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not INTEGER.match(value) or int(value) > INT64_MAX:
        raise illegal(name, INTEGER_RANGE)
    return int(value)


def boolean(params: Mapping[str, str], name: str) -> bool:
    """Return a boolean parameter sent as ``true``/``false`` (any case); absent is false."""
    value = params.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise invalid(name)
    return lowered == "true"
