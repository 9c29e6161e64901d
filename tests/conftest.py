"""Fixtures for the whole suite: a private Redis-compatible server, the exchange simulator."""

pytest_plugins = ["tests.fixtures.redis_server", "tests.fixtures.sim", "tests.fixtures.stack"]
