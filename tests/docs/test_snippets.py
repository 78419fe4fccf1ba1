"""Every Python block in README.md and docs/ runs as a complete program and exits 0.

Blocks are collected from the Markdown at import time, one test per block with the id
``<file>:<line>`` (the line of the opening fence), so ``pytest -k guides/httpx.md`` runs one
page. Each block runs in a fresh interpreter in a temporary directory, with the snippets' HTTP
address ``127.0.0.1:8080`` rewritten to a local server (``tests/docs/upstream.py``); Redis and
PostgreSQL are the ones on 127.0.0.1. The block is padded with blank lines so a traceback's
line numbers are the Markdown file's.

A block is skipped when ``<!-- snippet: no-run REASON -->`` is the line above its fence (at most
``MAX_NO_RUN`` in all, each with a reason) or when it only includes a file with ``--8<--``
(those files are run by their own tests, e.g. ``tests/e2e/test_examples.py``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docs.upstream import DocsUpstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAX_NO_RUN = 5
# What the collector finds today; a broken collector (or a lost page) then cannot pass by
# running nothing. Raise it when pages gain blocks.
MIN_BLOCKS = 33
TIMEOUT_SECONDS = 60
# Configuration a developer's shell may export; a snippet sets what it needs itself.
_CLEARED_ENV_PREFIXES = ("CB_", "RETRY_", "HEALTH_", "OTEL_")

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")
_PYTHON_LANGS = {"python", "py"}
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*no-run\b(?P<reason>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*snippet:")
_INCLUDE = re.compile(r"^\s*;?-{2}8<-{2}")
# what `ruff format` makes of an include it was allowed to format: `--8 < --"file"`
_MANGLED_INCLUDE = re.compile(r"^\s*-{2}8 +< +-{2}")
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its code, and why it is not run (if marked)."""

    path: str
    line: int
    code: str
    no_run: str | None = None

    @property
    def id(self) -> str:
        """``<file>:<line>``, the test id."""
        return f"{self.path}:{self.line}"

    @property
    def include_only(self) -> bool:
        """True when the block only pulls in a file with ``--8<--``."""
        lines = [line for line in self.code.splitlines() if line.strip()]
        return bool(lines) and all(_INCLUDE.match(line) for line in lines)

    def padded(self) -> str:
        """The code preceded by blank lines, so its line numbers are the Markdown file's."""
        return "\n" * self.line + self.code


@dataclass(frozen=True)
class Marker:
    """A ``<!-- snippet: ... -->`` comment and whether a Python fence follows it."""

    path: str
    line: int
    reason: str | None  # None: not a well-formed no-run marker
    above_python: bool


def parse_markdown(text: str, path: str) -> tuple[list[Block], list[Marker]]:
    """The Python blocks of one Markdown text and its snippet markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    markers: list[Marker] = []
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if not opening:
            if _ANY_MARKER.search(lines[i]):
                markers.append(_marker(lines, i, path))
            i += 1
            continue
        end = _fence_end(lines, i, opening.group("fence"))
        if opening.group("lang").lower() in _PYTHON_LANGS:
            indent = opening.group("indent")
            body = [
                line[len(indent) :] if line.startswith(indent) else line.lstrip()
                for line in lines[i + 1 : end]
            ]
            blocks.append(Block(path, i + 1, "\n".join(body) + "\n", _no_run_reason(lines, i)))
        i = end + 1
    return blocks, markers


def _no_run_reason(lines: list[str], fence: int) -> str | None:
    """The reason of a no-run marker above ``fence`` (past blank lines and other comments)."""
    above = fence - 1
    while above >= 0 and (not lines[above].strip() or _COMMENT.match(lines[above])):
        marker = _MARKER.match(lines[above])
        if marker:
            return marker.group("reason").strip()
        above -= 1
    return None


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    """Index of the line closing the fence opened at ``start`` (end of text if unclosed)."""
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    for j in range(start + 1, len(lines)):
        if closing.match(lines[j]):
            return j
    return len(lines)


def _marker(lines: list[str], index: int, path: str) -> Marker:
    match = _MARKER.match(lines[index])
    reason = match.group("reason").strip() if match else None
    below = index + 1
    while below < len(lines) and (not lines[below].strip() or _COMMENT.match(lines[below])):
        below += 1
    fence = _FENCE_OPEN.match(lines[below]) if below < len(lines) else None
    above_python = bool(fence and fence.group("lang").lower() in _PYTHON_LANGS)
    return Marker(path, index + 1, reason, above_python)


def _markdown_files() -> list[Path]:
    docs = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    readme = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    return readme + docs


def collect() -> tuple[list[Block], list[Marker]]:
    """Every Python block and snippet marker in README.md and docs/**/*.md."""
    blocks: list[Block] = []
    markers: list[Marker] = []
    for file in _markdown_files():
        found, marks = parse_markdown(
            file.read_text(encoding="utf-8"), file.relative_to(ROOT).as_posix()
        )
        blocks += found
        markers += marks
    return blocks, markers


BLOCKS, MARKERS = collect()
CODE_BLOCKS = [block for block in BLOCKS if not block.include_only]
RUNNABLE = [block for block in CODE_BLOCKS if block.no_run is None]


@pytest.fixture(scope="module")
def upstream() -> Iterator[DocsUpstream]:
    """The snippets' HTTP upstream, shared by every block of the run."""
    with DocsUpstream() as server:
        yield server


def _snippet_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_ENV_PREFIXES)}


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_snippet_runs(block: Block, upstream: DocsUpstream, tmp_path: Path) -> None:
    """The block runs to completion (exit status 0) in a fresh interpreter."""
    script = tmp_path / "snippet.py"
    script.write_text(upstream.rewrite(block.padded()), encoding="utf-8")
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=_snippet_env(),
            capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{block.id} still running after {TIMEOUT_SECONDS} s\n--- stdout ---\n"
            f"{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{block.id} exited {proc.returncode} (traceback lines are lines of {block.path})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


class _TopLevelAwait(ast.NodeVisitor):
    """Finds ``await`` (and ``async for``/``async with``) outside any function."""

    def __init__(self) -> None:
        self.lines: list[int] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        return  # its body runs when called, not at import

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        return

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    def visit_Await(self, node: ast.Await) -> None:
        self.lines.append(node.lineno)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.lines.append(node.lineno)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.lines.append(node.lineno)


def top_level_await_problems(block: Block) -> list[str]:
    """``file:line: why`` for a block that does not parse or awaits outside a function."""
    try:
        tree = ast.parse(block.padded(), filename=block.path)
    except SyntaxError as exc:
        return [f"{block.path}:{exc.lineno}: does not parse: {exc.msg}"]
    finder = _TopLevelAwait()
    finder.visit(tree)
    return [
        f"{block.path}:{line}: top-level await (wrap it in async def main)" for line in finder.lines
    ]


def test_no_python_block_awaits_at_top_level() -> None:
    """Every Python block (run or not) parses and awaits only inside functions."""
    problems = [problem for block in CODE_BLOCKS for problem in top_level_await_problems(block)]
    assert not problems, "\n".join(problems)


def test_no_run_blocks_are_rare_and_explained() -> None:
    """At most MAX_NO_RUN blocks are skipped; every marker has a reason and a Python fence below."""
    skipped = [block.id for block in CODE_BLOCKS if block.no_run is not None]
    assert len(skipped) <= MAX_NO_RUN, f"{len(skipped)} no-run blocks: {skipped}"
    bad = [
        f"{m.path}:{m.line}" for m in MARKERS if not m.reason or not m.above_python
    ]  # fmt: skip
    assert not bad, f"no-run markers without a reason or not right above a ```python fence: {bad}"


def test_includes_are_intact() -> None:
    """No ``--8<--`` include was rewritten by a formatter into Python that runs as an expression."""
    mangled = [
        block.id
        for block in BLOCKS
        if any(_MANGLED_INCLUDE.match(line) for line in block.code.splitlines())
    ]
    assert not mangled, (
        f'includes rewritten by `ruff format` (restore `--8<-- "file"` and put the fence '
        f"between <!-- fmt: off --> and <!-- fmt: on -->): {mangled}"
    )


def test_runbook_page_includes_the_runbook_from_its_conventions() -> None:
    """The runbook page's line-range include starts where alerts/RUNBOOK.md's conventions do.

    The page skips the file's title and introduction (whose relative link would not resolve
    on the site), so a line added above them must move the include's start line too.
    """
    page = (ROOT / "docs" / "operations" / "runbook.md").read_text(encoding="utf-8")
    match = re.search(r'^--8<-- "alerts/RUNBOOK\.md:(\d+):"$', page, re.M)
    assert match is not None, "docs/operations/runbook.md does not include alerts/RUNBOOK.md"
    runbook = (ROOT / "alerts" / "RUNBOOK.md").read_text(encoding="utf-8").splitlines()
    start = int(match.group(1))
    assert runbook[start - 1].startswith("Conventions used below"), runbook[start - 1]
    assert not re.search(r"\]\((?!#|https?://)", "\n".join(runbook[start - 1 :]))


def test_runner_finds_the_documented_blocks() -> None:
    """The collector finds at least MIN_BLOCKS runnable blocks, so the run cannot pass empty."""
    assert len(RUNNABLE) >= MIN_BLOCKS, [block.id for block in RUNNABLE]


def test_collector_reads_markers_includes_and_nested_fences() -> None:
    """Marked, include-only, indented and nested-fence blocks are each collected correctly."""
    text = "\n".join([
        "<!-- snippet: no-run needs a broker account -->",
        "```python", "import broker", "```",
        "```python", '--8<-- "examples/ai_client.py"', "```",
        "!!! example", "    ```python", "    print('indented')", "    ```",
        "````markdown", "```python", "print('inside a markdown sample')", "```", "````",
        "<!-- snippet: no-run -->", "", "```py", "print(1)", "```",
        "<!-- snippet: no-run shown, not run -->", "<!-- fmt: off -->", "```python", "x", "```",
    ])  # fmt: skip
    blocks, markers = parse_markdown(text, "page.md")
    assert [(b.line, b.no_run, b.include_only) for b in blocks] == [
        (2, "needs a broker account", False),
        (5, None, True),
        (9, None, False),
        (19, "", False),
        (24, "shown, not run", False),
    ]
    assert blocks[2].code == "print('indented')\n"
    assert [(m.line, m.reason, m.above_python) for m in markers] == [
        (1, "needs a broker account", True),
        (17, "", True),
        (22, "shown, not run", True),
    ]


def test_top_level_await_is_reported_with_its_markdown_line() -> None:
    """An ``await`` outside a function is reported at its line in the Markdown file."""
    inside = Block(
        "page.md", 10, "import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n"
    )
    outside = Block("page.md", 10, "import asyncio\n\nawait asyncio.sleep(0)\n")
    assert top_level_await_problems(inside) == []
    assert top_level_await_problems(outside) == [
        "page.md:13: top-level await (wrap it in async def main)"
    ]


def test_upstream_answers_as_the_snippet_convention_says(upstream: DocsUpstream) -> None:
    """GET gives the AAPL quote, POST echoes with 201, /fail/503 fails, and 8080 is rewritten."""
    base = upstream.rewrite("http://127.0.0.1:8080")
    assert base != "http://127.0.0.1:8080"
    with httpx.Client(base_url=base) as client:
        quote = client.get("/v2/quotes/AAPL")
        order = client.post("/v2/orders", json={"symbol": "AAPL", "qty": 1})
        failing = client.get("/fail/503/quotes")
    assert (quote.status_code, quote.json()) == (
        200, {"symbol": "AAPL", "price": 187.5, "path": "/v2/quotes/AAPL"},
    )  # fmt: skip
    assert (order.status_code, order.json()) == (201, {"symbol": "AAPL", "qty": 1})
    assert failing.status_code == 503
    assert json.loads(failing.content)["path"] == "/fail/503/quotes"
