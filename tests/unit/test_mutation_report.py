"""``python -m tests.mutation.report --forget``: clearing a module's mutation results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mutation import report


def test_forget_clears_one_modules_results_so_the_next_run_checks_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(report, "ROOT", tmp_path)
    meta = tmp_path / "mutants" / "shared" / "bus.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"a": 1, "b": 0}, "other": 7}))
    assert report.main(["--forget", "shared/bus.py"]) == 0
    assert json.loads(meta.read_text()) == {"exit_code_by_key": {"a": None, "b": None}, "other": 7}
    assert "shared/bus.py: 2 result(s) cleared" in capsys.readouterr().out
    assert report.forget("shared/lease.py") == 0  # never run: nothing to clear
