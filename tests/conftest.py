"""Fixtures shared by the whole suite: a private Redis-compatible server and the exchange simulator."""

pytest_plugins = ["tests.fixtures.redis_server", "tests.fixtures.sim"]
