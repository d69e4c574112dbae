"""Every ```python block of README.md and docs/*.md runs, so the docs cannot rot.

Each block runs as a script of its own in a fresh interpreter (its functions live in
``__main__``, as a reader's would), in an empty working folder, and must exit with status 0;
the examples check their results with ``assert``. A ``print(...)`` line states what it
prints in a comment at its end (``print(x)   # 3.5``): the block's output must be exactly
those lines, in order. A block may be preceded by a marker comment on the line before its
fence:

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
# A print() call at the start of a line, and the output its trailing comment states.
PRINT = re.compile(r"^\s*print\(")
STATED = re.compile(r"^\s*print\(.*\)\s*#\s?(.*?)\s*$")
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


def stated_output(source: str) -> list[str]:
    """The lines a block says it prints, from the comments of its print() lines."""
    return [m.group(1) for m in map(STATED.match, source.splitlines()) if m]


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


def test_every_print_states_its_output() -> None:
    # Otherwise a print() without its comment would make the output check fail, or (once
    # a block has none) skip it: a reader must see what each line prints.
    for path in DOCS:
        for line, source, marker in extract(path):
            if marker and marker[0] == "not run":
                continue
            for offset, text in enumerate(source.splitlines(), start=1):
                if PRINT.match(text):
                    assert STATED.match(text), (
                        f"{path.name}:{line + offset}: a print() in an example must end "
                        f"with a comment stating what it prints: {text.strip()}")


def test_the_output_check_reads_the_comments() -> None:
    # Guards the pattern: with none read, every output check would pass.
    readme = {line: source for line, source, _ in extract(ROOT / "README.md")}
    assert any(stated_output(source) == ["3.5"] for source in readme.values())


def test_every_public_name_is_in_the_guide() -> None:
    guide = (ROOT / "docs" / "guide.md").read_text()
    missing = [name for name in subsandbox.__all__
               if not re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", guide)]
    assert not missing, f"docs/guide.md never names these public names: {missing}"


def test_every_public_callable_and_property_has_a_docstring() -> None:
    # help() and an editor's hover show these; an accessor without one says nothing.
    import inspect

    missing = []
    for name in subsandbox.__all__:
        obj = getattr(subsandbox, name)
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            if (callable(value) or isinstance(value, property)
                    or inspect.isdatadescriptor(value) or inspect.ismethoddescriptor(value)):
                if not (getattr(value, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, f"public names without a docstring: {missing}"


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
    stated = stated_output(source)
    if stated:
        assert result.stdout.splitlines() == stated, (
            f"the example at {path.relative_to(ROOT)}:{line} printed\n{result.stdout}"
            f"but its comments say it prints\n" + "\n".join(stated))
