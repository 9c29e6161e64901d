"""Per-symbol failure streaks: skipped after FAILS_BEFORE_SKIP closes, retried later."""

from __future__ import annotations

from services.market_data.health import FAILS_BEFORE_SKIP, SKIP_CLOSES, Health

TF = 300_000


def test_a_symbol_is_skipped_after_failing_closes_in_a_row_then_retried() -> None:
    h = Health()
    close = 0
    for _ in range(FAILS_BEFORE_SKIP - 1):
        close += TF
        assert not h.failed("SOL", close, TF)
        assert not h.skipped("SOL", close + TF)
    close += TF
    assert h.failed("SOL", close, TF)
    for k in range(1, SKIP_CLOSES):
        assert h.skipped("SOL", close + k * TF)
    assert not h.skipped("SOL", close + SKIP_CLOSES * TF)  # tried again
    assert h.skipped_count(["SOL", "BTC"], close + TF) == 1
    retry = close + SKIP_CLOSES * TF
    assert h.failed("SOL", retry, TF)  # one more failure: out again at once
    assert h.skipped("SOL", retry + TF)
    h.succeeded("SOL")
    assert not h.skipped("SOL", retry + TF)
    assert h.skipped_count(["SOL", "BTC"], retry + TF) == 0


def test_a_success_ends_the_streak() -> None:
    h = Health()
    for k in range(FAILS_BEFORE_SKIP - 1):
        h.failed("SOL", k * TF, TF)
    h.succeeded("SOL")
    assert not h.failed("SOL", 10 * TF, TF)
    assert not h.skipped("SOL", 11 * TF)
