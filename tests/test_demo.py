"""README's first command, ``python -m subsandbox demo``, on a small job: threads and
sandboxes must compute the same answer and the summary table must be printed. No time is
asserted (the figures of a small job on a loaded machine mean nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Not the checkout's root: its source tree would shadow the installed package.
HERE = Path(__file__).resolve().parent


def test_demo_gets_the_same_answer_with_threads_and_sandboxes() -> None:
    proc = subprocess.run([sys.executable, "-m", "subsandbox", "demo", "--size", "0.02",
                           "--workers", "2"], capture_output=True, text=True, timeout=300,
                          cwd=HERE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "same answer from threads and sandboxes: yes" in lines
    table = [line.split() for line in lines if line.startswith(("threads ",
                                                                        "sandboxes "))]
    assert [row[0] for row in table[-2:]] == ["threads", "sandboxes"], proc.stdout
    assert any("2 sandboxes started in" in line for line in lines), proc.stdout
    # Piped, as into a log: no progress bar redrawn in place, only each run's final bar.
    assert "\r" not in proc.stdout, proc.stdout[:2000]
    bars = [line.split("|")[0].strip() for line in lines if "docs" in line and "|" in line]
    assert bars == ["threads", "sandboxes"], proc.stdout
