"""The exchange error taxonomy: ccxt errors classified, translated, sanitized; backoff policy."""

from __future__ import annotations

import aiohttp
import ccxt.async_support as ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.exchange_errors import (
    RETRY_AFTER_ATTR,
    AuthError,
    BackoffPolicy,
    InsufficientMargin,
    Kind,
    OperationalError,
    OrderRejected,
    OutcomeUnknown,
    TemporaryError,
    UnreadableAnswer,
    classify,
    is_retryable,
    parse_retry_after,
    retry_after,
    sanitize,
    translate,
)


def _wrapped_transport_error() -> ccxt.ExchangeError:
    """Return the plain ExchangeError ccxt raises for a non-connection aiohttp failure."""
    try:
        try:
            raise aiohttp.ClientPayloadError("truncated body")
        except aiohttp.ClientError as inner:
            raise ccxt.ExchangeError("binanceusdm GET http://x/fapi/v1/order") from inner
    except ccxt.ExchangeError as outer:
        return outer


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (ccxt.InvalidNonce("-1021"), Kind.CLOCK),
        (ccxt.DDoSProtection("418"), Kind.RATE_LIMIT),
        (ccxt.RateLimitExceeded("-1003"), Kind.RATE_LIMIT),
        (ccxt.RequestTimeout("timed out"), Kind.TIMEOUT),
        (ccxt.ExchangeNotAvailable("502"), Kind.UNAVAILABLE),
        (ccxt.OnMaintenance("maintenance"), Kind.UNAVAILABLE),
        (ccxt.NetworkError("reset"), Kind.UNAVAILABLE),
        (ccxt.OperationFailed("-1001 internal error"), Kind.UNAVAILABLE),
        (ccxt.OperationFailed('binanceusdm {"code":-1008,"msg":"busy"}'), Kind.UNAVAILABLE),
        (ccxt.OperationFailed('binanceusdm {"code":-2020,"msg":"Unable to fill."}'), Kind.REJECTED),
        (ccxt.OperationFailed('binanceusdm {"code": -2023,"msg":"liquidation"}'), Kind.REJECTED),
        (ccxt.InsufficientFunds("-2019"), Kind.INSUFFICIENT),
        (ccxt.OrderNotFound("-2013"), Kind.NOT_FOUND),
        (ccxt.DuplicateOrderId("dup"), Kind.DUPLICATE),
        (ccxt.InvalidOrder('binanceusdm {"code":-4116,"msg":"dup"}'), Kind.DUPLICATE),
        (ccxt.InvalidOrder("-2022 ReduceOnly Order is rejected."), Kind.REJECTED),
        (ccxt.OperationRejected("-2027"), Kind.REJECTED),
        (ccxt.BadSymbol("-1121"), Kind.REJECTED),
        (ccxt.MarginModeAlreadySet("-4046"), Kind.NO_CHANGE),
        (ccxt.AuthenticationError("-1022"), Kind.AUTH),
        (ccxt.PermissionDenied("-2015"), Kind.AUTH),
        (ccxt.BadRequest("-1102"), Kind.OTHER),
        (ccxt.ExchangeError("unknown"), Kind.OTHER),
        (_wrapped_transport_error(), Kind.UNAVAILABLE),
    ],
)
def test_classify_maps_ccxt_errors(err: BaseException, kind: Kind) -> None:
    assert classify(err) is kind


@pytest.mark.parametrize(
    "err",
    [ccxt.InsufficientFunds("x"), ccxt.InvalidOrder("x"), ccxt.AuthenticationError("x")],
)
def test_business_errors_are_never_retried(err: BaseException) -> None:
    assert not is_retryable(err)


@pytest.mark.parametrize(
    ("err", "ours"),
    [
        (ccxt.RequestTimeout("t"), TemporaryError),
        (ccxt.DDoSProtection("429"), TemporaryError),
        (ccxt.InvalidNonce("-1021"), TemporaryError),
        (ccxt.InsufficientFunds("-2019"), InsufficientMargin),
        (ccxt.InvalidOrder("-2022"), OrderRejected),
        (ccxt.AuthenticationError("-1022"), AuthError),
        (ccxt.BadRequest("-1102"), OperationalError),
        (ccxt.ExchangeError("?"), OperationalError),
    ],
)
def test_translate_picks_our_class_and_names_the_call(
    err: BaseException, ours: type[Exception]
) -> None:
    out = translate(err, "balance")
    assert type(out) is ours
    assert out.call == "balance"
    assert str(out).startswith("balance: ")


def test_insufficient_margin_is_an_order_rejection() -> None:
    assert isinstance(translate(ccxt.InsufficientFunds("-2019"), "place_order"), OrderRejected)


def test_sanitize_drops_query_signature_and_secrets() -> None:
    text = (
        "binanceusdm GET http://127.0.0.1:8900/fapi/v3/account?timestamp=1&signature=abcdef0123 "
        'body {"k": "my-api-key", "s": "signature=00ff"} my-secret'
    )
    out = sanitize(text, ["my-api-key", "my-secret", ""])
    assert "my-api-key" not in out
    assert "my-secret" not in out
    assert "abcdef0123" not in out
    assert "00ff" not in out
    assert "timestamp=1" not in out
    assert "http://127.0.0.1:8900/fapi/v3/account" in out


def test_sanitize_caps_the_length() -> None:
    assert len(sanitize("x" * 5000)) <= 300


def test_translate_masks_secrets() -> None:
    out = translate(ccxt.AuthenticationError("key sekrit123 refused"), "balance", ["sekrit123"])
    assert "sekrit123" not in str(out)


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "0"}, 0.0),  # "now" is an answer, not a missing one
        ({"Content-Type": "application/json"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, want: float | None) -> None:
    assert parse_retry_after(headers) == want


def _rate_limited(after: float | None) -> ccxt.DDoSProtection:
    err = ccxt.DDoSProtection("429")
    setattr(err, RETRY_AFTER_ATTR, after)
    return err


def test_retry_after_is_read_only_where_it_was_attached() -> None:
    assert retry_after(_rate_limited(3.0)) == 3.0
    assert retry_after(_rate_limited(None)) is None
    assert retry_after(ccxt.DDoSProtection("429 without the header")) is None


def test_an_unknown_outcome_carries_its_call_and_order() -> None:
    err = OutcomeUnknown("no answer", "create_order", "tb-e-1")
    assert (str(err), err.call, err.client_order_id) == ("no answer", "create_order", "tb-e-1")
    bare = OutcomeUnknown("no answer")
    assert (bare.call, bare.client_order_id) == ("", "")


def test_backoff_grows_and_is_capped() -> None:
    policy = BackoffPolicy(attempts=10, initial=0.1, maximum=1.0)
    timeout = ccxt.RequestTimeout("t")
    assert policy.wait(1, timeout, 0.999) <= 0.1
    assert policy.wait(3, timeout, 0.999) == pytest.approx(0.4, rel=0.01)
    assert policy.wait(9, timeout, 0.999) <= 1.0


def test_rate_limit_waits_longer_and_honours_retry_after() -> None:
    policy = BackoffPolicy(attempts=5, initial=0.1, maximum=1.0)
    network = policy.wait(2, ccxt.RequestTimeout("t"), 0.999)
    limited = policy.wait(2, _rate_limited(None), 0.0)
    assert limited > network
    assert policy.wait(1, _rate_limited(12.0), 0.5) >= 12.0


def test_clock_errors_retry_at_once() -> None:
    assert BackoffPolicy().wait(1, ccxt.InvalidNonce("-1021"), 0.9) == 0.0


def test_backoff_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="attempts"):
        BackoffPolicy(attempts=0)
    with pytest.raises(ValueError, match="initial"):
        BackoffPolicy(initial=-0.1)
    with pytest.raises(ValueError, match="initial <= maximum"):
        BackoffPolicy(initial=2.0, maximum=1.0)
    BackoffPolicy(attempts=1, initial=0.0, maximum=0.0)  # the edges are allowed
    BackoffPolicy(initial=1.0, maximum=1.0)


def test_backoff_waits_worked_out_by_hand() -> None:
    policy = BackoffPolicy(attempts=5, initial=0.1, maximum=1.0, rate_limit_factor=4.0)
    timeout = ccxt.RequestTimeout("t")
    # Attempt 2: ceiling min(1.0, 0.1 * 2) = 0.2; full jitter: rand * 0.2.
    assert policy.wait(2, timeout, 0.5) == pytest.approx(0.1)
    # Rate limited: ceiling 0.2 * 4 = 0.8; half of it, plus up to the other half.
    assert policy.wait(2, _rate_limited(None), 0.0) == pytest.approx(0.4)
    assert policy.wait(2, _rate_limited(None), 0.5) == pytest.approx(0.6)
    # Attempt 9: 0.1 * 256 is capped at 1.0, and at 4.0 when rate limited.
    assert policy.wait(9, _rate_limited(None), 0.5) == pytest.approx(3.0)


@settings(max_examples=50, deadline=None)
@given(attempt=st.integers(1, 30), rand=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_bounds(attempt: int, rand: float) -> None:
    policy = BackoffPolicy(attempts=30, initial=0.05, maximum=2.0, rate_limit_factor=4.0)
    assert 0 <= policy.wait(attempt, ccxt.ExchangeNotAvailable("x"), rand) <= 2.0
    assert 0 < policy.wait(attempt, _rate_limited(None), rand) <= 8.0


def test_sanitize_output_word_for_word() -> None:
    text = (
        "binanceusdm GET http://127.0.0.1:8900/fapi/v3/account?timestamp=1&signature=abcdef0123 "
        'body {"k": "my-api-key", "s": "signature=00ff"} my-secret'
    )
    assert sanitize(text, ["my-api-key", "my-secret"]) == (
        "binanceusdm GET http://127.0.0.1:8900/fapi/v3/account?… "
        'body {"k": "**********", "s": "signature=…"} **********'
    )


def test_sanitize_cuts_only_beyond_the_limit() -> None:
    assert sanitize("x" * 300) == "x" * 300
    assert sanitize("x" * 301) == "x" * 299 + "…"


def test_a_network_failure_says_whether_the_retries_ran_out() -> None:
    timeout = ccxt.RequestTimeout("slow")
    assert str(translate(timeout, "balance")) == "balance: RequestTimeout: slow (retries exhausted)"
    once = translate(timeout, "balance", retries_exhausted=False)
    assert (type(once), str(once)) == (TemporaryError, "balance: RequestTimeout: slow")


def test_only_an_unreadable_bad_response_is_an_unreadable_answer() -> None:
    def caused(err: ccxt.BaseError, cause: BaseException) -> ccxt.BaseError:
        err.__cause__ = cause
        return err

    unreadable = translate(caused(ccxt.BadResponse("html"), TypeError("str")), "markets")
    assert (type(unreadable), unreadable.call) == (UnreadableAnswer, "markets")
    # a timeout whose cause happens to be a TypeError is a plain network failure
    timeout = translate(caused(ccxt.RequestTimeout("slow"), TypeError("x")), "markets")
    assert type(timeout) is TemporaryError
    assert type(translate(ccxt.BadResponse("empty"), "markets")) is TemporaryError


def test_an_error_made_without_a_call_names_none() -> None:
    assert TemporaryError("exchange away").call == ""
