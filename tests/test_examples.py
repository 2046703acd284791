"""The main job: Motia's order workflow on the default SQLite file, run twice."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_order_workflow_keeps_state_between_runs(tmp_path: Path) -> None:
    totals = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "order_workflow.py")],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        )
        report = re.search(r"DailyReport +\{'total': (\d+), 'pending': (\d+), 'paid': (\d+)\}", run.stderr)
        assert report is not None, run.stderr
        totals.append(tuple(map(int, report.groups())))
        assert "ProcessPayment" in run.stderr
    assert totals == [(3, 1, 2), (6, 2, 4)]
    assert (tmp_path / ".motia" / "motia.state.db").is_file()
