"""Our small exchange error taxonomy, and the pure rules that map ccxt errors onto it.

ccxt raises a deep tree of exceptions; the services only need to know what to do next:

- ``TemporaryError``: the exchange could not be reached or asked us to slow down, and the
  retries ran out. Nothing was changed on the exchange (or the call was a read). Try later.
- ``OrderRejected``: the exchange refused the order; it was not executed. Do not resend.
  ``InsufficientMargin`` (Binance -2019/-2018/-2024) is the one the executor sizes around.
- ``OutcomeUnknown``: an order may or may not exist and the lookup by client order id could
  not settle it. Keep the intent in flight until reconciliation settles it.
- ``OperationalError``: anything else (bad request, unknown symbol, unexpected reply). Stop
  and look. ``AuthError`` (bad key, bad signature, no permission) is one of these.

Every translated error keeps the ccxt error as ``__cause__`` and never carries a secret: the
message is stripped of query strings and signatures, and known secret values are masked.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import ccxt.async_support as ccxt

RETRY_AFTER_ATTR = "tb_retry_after"  # seconds, set on a ccxt DDoSProtection by the client
MAX_MESSAGE = 300


class ExchangeFailure(Exception):
    """Base of every error the exchange client raises; ``call`` names the client call."""

    def __init__(self, message: str, call: str = "") -> None:
        super().__init__(message)
        self.call = call


class TemporaryError(ExchangeFailure):
    """A network-class failure outlived its retries; nothing changed, try again later."""


class UnreadableAnswer(TemporaryError):
    """The exchange answered something that could not be read (an HTML page, wrong shape)."""


class OperationalError(ExchangeFailure):
    """The exchange answered something we cannot handle automatically; stop and look."""


class AuthError(OperationalError):
    """The API key, signature or permissions were refused."""


class OrderRejected(ExchangeFailure):
    """The exchange refused the order for good; it was not executed."""


class InsufficientMargin(OrderRejected):
    """The order needs more margin (or position) than the account has."""


class SendRefused(ExchangeFailure):
    """The caller's guard refused a send (this copy may no longer act); nothing was sent."""


class OutcomeUnknown(ExchangeFailure):
    """An order may or may not exist; the lookup by client order id could not settle it."""

    def __init__(self, message: str, call: str = "", client_order_id: str = "") -> None:
        super().__init__(message, call)
        self.client_order_id = client_order_id


class Kind(enum.Enum):
    """What a ccxt error means for the caller (also the metric outcome label)."""

    CLOCK = "clock"
    RATE_LIMIT = "rate_limited"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INSUFFICIENT = "insufficient_margin"
    NOT_FOUND = "not_found"
    DUPLICATE = "duplicate_id"
    NO_CHANGE = "no_change"
    REJECTED = "rejected"
    AUTH = "auth"
    OTHER = "error"


RETRYABLE = frozenset({Kind.CLOCK, Kind.RATE_LIMIT, Kind.TIMEOUT, Kind.UNAVAILABLE})
# After a send that failed with one of these, the order may exist: look it up before resending.
# A clock (-1021) rejection is checked before execution, so it is the one network kind that
# proves the order was not placed.
MAYBE_EXECUTED = frozenset({Kind.RATE_LIMIT, Kind.TIMEOUT, Kind.UNAVAILABLE, Kind.OTHER})

# What ccxt (or our parsing) raises when an answer has the wrong shape: an HTML page, a
# string where a list belongs, None where a number belongs. The answer could not be read.
UNREADABLE = (TypeError, ValueError, KeyError, AttributeError, IndexError)

_DUPLICATE_CODE = "-4116"  # DUPLICATED_CLIENT_ORDER_ID: the id is taken by an open order
# ccxt files these Binance answers under OperationFailed (its "temporary" family), but they
# are refusals of the order itself: not executed, and a resend meets the same answer.
_REFUSED_CODES = frozenset({"-2020", "-2023"})  # unable to fill; account in liquidation
_CODE = re.compile(r'"code":\s*(-?\d+)')


def binance_code(err: BaseException) -> str | None:
    """Return the Binance error code in a ccxt error's message (its JSON body), if any."""
    match = _CODE.search(str(err))
    return match.group(1) if match else None


def classify(err: BaseException) -> Kind:
    """Return what a (ccxt) exception means for retrying and for order outcomes."""
    if isinstance(err, ccxt.InvalidNonce):
        return Kind.CLOCK
    if isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return Kind.RATE_LIMIT
    if isinstance(err, ccxt.RequestTimeout):
        return Kind.TIMEOUT
    if isinstance(err, ccxt.OperationFailed) and binance_code(err) in _REFUSED_CODES:
        return Kind.REJECTED
    if isinstance(err, ccxt.OperationFailed):
        # NetworkError (5xx, connection reset, ...) and Binance's -1000/-1001/-1006/-1008
        # "internal error, execution status unknown" answers, and BadResponse.
        return Kind.UNAVAILABLE
    if isinstance(err, ccxt.InsufficientFunds):
        return Kind.INSUFFICIENT
    if isinstance(err, ccxt.OrderNotFound):
        return Kind.NOT_FOUND
    if isinstance(err, ccxt.DuplicateOrderId) or (
        isinstance(err, ccxt.InvalidOrder) and _DUPLICATE_CODE in str(err)
    ):
        return Kind.DUPLICATE
    if isinstance(err, ccxt.NoChange):
        return Kind.NO_CHANGE
    if isinstance(err, ccxt.AuthenticationError):
        return Kind.AUTH
    if isinstance(err, ccxt.InvalidOrder | ccxt.OperationRejected | ccxt.BadSymbol):
        return Kind.REJECTED
    if isinstance(err, ccxt.ExchangeError) and isinstance(err.__cause__, aiohttp.ClientError):
        # ccxt wraps transport failures that are not connection errors (a truncated body)
        # in a plain ExchangeError; they are network failures all the same.
        return Kind.UNAVAILABLE
    return Kind.OTHER


def is_retryable(err: BaseException) -> bool:
    """Return True for network-class failures that a later identical call may survive."""
    return classify(err) in RETRYABLE


_SIGNATURE = re.compile(r"(signature=)[0-9a-fA-F]+")
_QUERY = re.compile(r"(https?://[^\s?]+)\?\S*")


def sanitize(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` without query strings, signatures or any of ``secrets``, shortened."""
    out = _QUERY.sub(r"\1?…", text)
    out = _SIGNATURE.sub(r"\1…", out)
    for s in secrets:
        if s:
            out = out.replace(s, "**********")
    if len(out) > MAX_MESSAGE:
        out = out[: MAX_MESSAGE - 1] + "…"
    return out


def describe(err: BaseException, secrets: Iterable[str] = ()) -> str:
    """Return a one-line, secret-free description of a ccxt exception."""
    return f"{type(err).__name__}: {sanitize(str(err), secrets)}"


def translate(
    err: BaseException,
    call: str,
    secrets: Iterable[str] = (),
    *,
    retries_exhausted: bool = True,
) -> ExchangeFailure:
    """Map a ccxt exception to our taxonomy (the caller raises it ``from err``)."""
    kind = classify(err)
    msg = f"{call}: {describe(err, secrets)}"
    if kind in RETRYABLE:
        note = " (retries exhausted)" if retries_exhausted else ""
        if isinstance(err, ccxt.BadResponse) and isinstance(err.__cause__, UNREADABLE):
            return UnreadableAnswer(msg + note, call)
        return TemporaryError(msg + note, call)
    if kind is Kind.INSUFFICIENT:
        return InsufficientMargin(msg, call)
    if kind in (Kind.REJECTED, Kind.DUPLICATE):
        return OrderRejected(msg, call)
    if kind is Kind.AUTH:
        return AuthError(msg, call)
    return OperationalError(msg, call)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Return the Retry-After header in seconds (the HTTP-date form, unused by Binance: None)."""
    if not headers:
        return None
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def retry_after(err: BaseException) -> float | None:
    """Return the server's requested wait attached to a rate-limit error, if any."""
    value = getattr(err, RETRY_AFTER_ATTR, None)
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with full jitter; rate limits wait longer and honour Retry-After."""

    attempts: int = 5
    initial: float = 0.25
    maximum: float = 10.0
    rate_limit_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial < 0 or self.maximum < self.initial:
            raise ValueError(
                f"BackoffPolicy needs attempts >= 1 and 0 <= initial <= maximum, got {self}"
            )

    def wait(self, attempt: int, err: BaseException | None, rand: float) -> float:
        """Return seconds to sleep after failed ``attempt`` (1-based); ``rand`` in [0, 1)."""
        ceiling = min(self.maximum, self.initial * 2.0 ** (attempt - 1))
        if err is not None and classify(err) is Kind.RATE_LIMIT:
            ceiling = min(self.maximum * self.rate_limit_factor, ceiling * self.rate_limit_factor)
            # Half to all of the ceiling, and never before the server's Retry-After.
            return max(retry_after(err) or 0.0, ceiling / 2 + rand * ceiling / 2)
        if err is not None and classify(err) is Kind.CLOCK:
            return 0.0  # the clock was re-synced; the next attempt can go at once
        return rand * ceiling
