"""The committed dashboards type-check against Grafana 11.6's TypeScript dashboard schema.

``dashboards/schema-check`` pins ``@grafana/schema`` (11.6.x) and TypeScript; its ``check.ts``
types each dashboard JSON as the schema's ``Dashboard``. Its ``node_modules`` is not committed:
``npm ci`` installs it from the lock file when it is missing or older than the lock file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
SCHEMA_CHECK = DASHBOARDS / "schema-check"
CHECK_FILES = ("package.json", "package-lock.json", "tsconfig.json", "check.ts")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """dashboards/schema-check/node_modules, installed with `npm ci` when missing or stale."""
    if shutil.which("npm") is None or shutil.which("npx") is None:
        pytest.fail("node and npm are needed for the dashboard schema check")
    installed = SCHEMA_CHECK / "node_modules" / ".package-lock.json"
    lock = SCHEMA_CHECK / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SCHEMA_CHECK,
            check=True,
            timeout=540,
        )
    return SCHEMA_CHECK / "node_modules"


def _tsc(project: Path) -> subprocess.CompletedProcess[str]:
    # npx finds tsc in the project's node_modules/.bin; --no-install never downloads one.
    return subprocess.run(
        ["npx", "--no-install", "tsc", "--noEmit", "-p", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_committed_dashboards_match_the_grafana_schema(node_modules: Path) -> None:
    """`npx tsc --noEmit -p dashboards/schema-check` succeeds on the committed dashboards."""
    result = _tsc(SCHEMA_CHECK)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_wrong_typed_field(node_modules: Path, tmp_path: Path) -> None:
    """The same check fails on a dashboard whose panel gridPos.h is a string."""
    check = tmp_path / "schema-check"
    check.mkdir()
    for name in CHECK_FILES:
        shutil.copy(SCHEMA_CHECK / name, check / name)
    (check / "node_modules").symlink_to(node_modules, target_is_directory=True)
    for path in DASHBOARDS.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    broken = json.loads((tmp_path / "resilience-overview.json").read_text("utf-8"))
    broken["panels"][1]["gridPos"]["h"] = "x"
    (tmp_path / "resilience-overview.json").write_text(json.dumps(broken), "utf-8")

    result = _tsc(check)

    assert result.returncode != 0
    assert "check.ts" in result.stdout
    assert "error TS2322" in result.stdout
    assert "gridPos.h" in result.stdout
