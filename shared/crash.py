"""Crash points for the restart-safety tests: die with SIGKILL at a named line on request.

``crash_point("entry_intent_written")`` does nothing unless the environment variable
TRADEBOT_TEST_CRASH_AT names that point; then the process kills itself at once, as a
power cut would, between two lines that must survive a crash. Production never sets it.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "TRADEBOT_TEST_CRASH_AT"

# Points the services offer, by where they sit.
POINTS = (
    "entry_intent_written",  # executor: intent in Redis, order not sent
    "entry_filled",  # executor: entry filled and reported, stop not placed
    "exit_filled",  # executor: exit filled and reported, stop not cancelled
    "event_seen",  # state: a fill event read, not folded into the book
)


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if the tests asked to crash at ``name``."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
