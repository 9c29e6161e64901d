"""Code shared by every tradebot service: config, schemas, bus, Redis, exchange, logs, metrics."""
