"""The tradebot services: market_data, signals, executor, state, exchange_sim, backtest."""
