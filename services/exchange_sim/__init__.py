"""The exchange_sim service."""
