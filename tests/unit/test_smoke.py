"""Smoke test: the package imports."""


def test_import() -> None:
    import shared.config

    assert shared.config.Settings().leverage == 3
