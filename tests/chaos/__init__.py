"""Chaos tests: the whole bot as processes, broken for minutes, then checked (draft)."""
