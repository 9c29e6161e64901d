"""Operator commands of ``tradebot``: status, halt/resume/flatten, the dead-letter queue."""
