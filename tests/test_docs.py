"""Every ```python block of README.md and docs/*.md runs, so the docs cannot rot.

Each block runs as a script of its own in a fresh interpreter (its functions live in
``__main__``, as a reader's would), in an empty working folder, and must exit with status 0;
the examples check their results with ``assert``. A block may be preceded by a marker
comment on the line before its fence:

    <!-- needs: executor -->   run only where subsandbox.SandboxPoolExecutor exists
    <!-- needs: policy -->     run only where subsandbox.Policy exists
    <!-- not run: REASON -->   shown, never run (for a fragment that cannot stand alone)

The ``needs`` markers are for features merged from other branches; once they are in,
the condition is always true and the markers can go.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import subsandbox
from conftest import run_script

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(needs|not run):\s*([^>]*?)\s*-->\s*$")
NEEDS = {"executor": "SandboxPoolExecutor", "policy": "Policy"}


def extract(path: Path) -> list[tuple[int, str, tuple[str, str] | None]]:
    """(line number, source, marker) of each python block of a Markdown file."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        m = MARKER.search(before)
        blocks.append((line, match.group(1), (m.group(1), m.group(2)) if m else None))
    return blocks


def _has(name: str) -> bool:
    try:
        getattr(subsandbox, name)
    except (AttributeError, ImportError):  # a lazy name whose module is not merged yet
        return False
    return True


EXAMPLES = [pytest.param(path, line, source, marker, id=f"{path.name}:{line}")
            for path in DOCS for line, source, marker in extract(path)]


def test_the_docs_have_examples() -> None:
    # Guards the extraction itself: a broken pattern would make every example "pass".
    names = {p.values[0].name for p in EXAMPLES}  # type: ignore[union-attr]
    assert {"README.md", "guide.md", "architecture.md"} <= names


def test_markers_are_known() -> None:
    for path in DOCS:
        for line, _, marker in extract(path):
            if marker and marker[0] == "needs":
                assert marker[1] in NEEDS, f"{path.name}:{line}: unknown need {marker[1]!r}"


@pytest.mark.parametrize("path, line, source, marker", EXAMPLES)
def test_example_runs(path: Path, line: int, source: str, marker: tuple[str, str] | None,
                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if marker is not None:
        kind, what = marker
        if kind == "not run":
            pytest.skip(f"marked not runnable: {what}")
        if not _has(NEEDS[what]):
            pytest.skip(f"needs subsandbox.{NEEDS[what]} (branch '{what}' not merged here)")
    monkeypatch.chdir(tmp_path)
    result = run_script(source, timeout=120)
    assert result.returncode == 0, (
        f"the example at {path.relative_to(ROOT)}:{line} failed:\n{source}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
