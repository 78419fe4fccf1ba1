"""Importing the dashboards with grafana-client into a recording stand-in for Grafana's HTTP API.

No Grafana server can be installed here, so ``FakeGrafana`` serves the endpoints the import
uses (``GET /api/dashboards/uid/{uid}``, ``GET``/``POST /api/folders``, ``POST
/api/dashboards/db``) the way Grafana 11 answers them, and records every request.

Idempotence, as decided in ``resilience_otel.grafana``: a second import of the same dashboards
reports them ``unchanged`` and sends no save at all.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from resilience_otel.cli import main
from resilience_otel.grafana import GrafanaImportError, import_dashboards

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UIDS = ["resilience-overview", "resilience-service"]
TOKEN_HEADER = "Bearer s3cret"
BASIC_HEADER = "Basic " + base64.b64encode(b"admin:pa55").decode()


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's folder and dashboard API in memory; records requests, can be told to fail."""

    accepted_auth: set[str] = field(default_factory=lambda: {TOKEN_HEADER, BASIC_HEADER})
    requests: list[Request] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (method, path) -> (status, JSON body) answered instead of the normal response
    failures: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    url: str = ""

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def handle(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        if request.authorization not in self.accepted_auth:
            return 401, {"message": "Unauthorized"}
        if (request.method, request.path) in self.failures:
            return self.failures[request.method, request.path]
        route = (request.method, request.path.split("?")[0])
        if route == ("GET", "/api/folders"):
            return 200, self.folders
        if route == ("POST", "/api/folders"):
            return 200, self._create_folder(request.body["title"])
        if route == ("POST", "/api/dashboards/db"):
            return 200, self._save(request.body)
        if request.method == "GET" and request.path.startswith("/api/dashboards/uid/"):
            found = self.dashboards.get(request.path.rsplit("/", 1)[1])
            return (200, found) if found else (404, {"message": "Dashboard not found"})
        return 404, {"message": "Not found"}

    def _create_folder(self, title: str) -> dict[str, Any]:
        folder = {"id": len(self.folders) + 1, "uid": f"f{len(self.folders) + 1}", "title": title}
        self.folders.append(folder)
        return {**folder, "url": f"/dashboards/f/{folder['uid']}/", "version": 1}

    def _save(self, body: dict[str, Any]) -> dict[str, Any]:
        uid = body["dashboard"]["uid"]
        previous = self.dashboards.get(uid)
        version = previous["dashboard"]["version"] + 1 if previous else 1
        url = f"/d/{uid}/x"
        self.dashboards[uid] = {
            "dashboard": {**body["dashboard"], "id": len(self.dashboards) + 1, "version": version},
            "meta": {"folderUid": body["folderUid"], "url": url, "version": version},
        }
        return {"id": 1, "uid": uid, "url": url, "status": "success", "version": version}


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                self.path,
                self.headers.get("Authorization"),
                json.loads(raw) if raw else None,
            )
            status, payload = grafana.handle(request)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output quiet."""

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    """A FakeGrafana served on a free loopback port for the duration of one test."""
    fake = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


def _committed(uid: str) -> dict[str, Any]:
    return json.loads((ROOT / "dashboards" / f"{uid}.json").read_text("utf-8"))


def _import(grafana: FakeGrafana, **kwargs: Any) -> Any:
    return import_dashboards(grafana.url, token="s3cret", **kwargs)


# -- a first import ------------------------------------------------------------------------------
def test_first_import_creates_the_folder_and_every_dashboard(grafana: FakeGrafana) -> None:
    """Into an empty Grafana: folder created, both dashboards reported created."""
    report = _import(grafana)
    assert report.folder_created is True
    assert report.folder_uid == "f1"
    assert [(d.uid, d.action, d.version) for d in report.dashboards] == [
        ("resilience-overview", "created", 1),
        ("resilience-service", "created", 1),
    ]


def test_import_reads_first_then_creates_the_folder_then_saves(grafana: FakeGrafana) -> None:
    """The request sequence: fetch each dashboard, find/create the folder, save each."""
    _import(grafana)
    assert [(r.method, r.path) for r in grafana.requests] == [
        ("GET", "/api/dashboards/uid/resilience-overview"),
        ("GET", "/api/dashboards/uid/resilience-service"),
        ("GET", "/api/folders"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert grafana.calls("POST", "/api/folders")[0].body == {"title": "Resilience"}


def test_save_payload_is_the_committed_json_with_folder_overwrite_and_message(
    grafana: FakeGrafana,
) -> None:
    """Each save sends the dashboard JSON unchanged, folderUid, overwrite=true and the message."""
    _import(grafana, folder="Ops", message="deploy 42")
    saves = grafana.calls("POST", "/api/dashboards/db")
    assert [save.body for save in saves] == [
        {"dashboard": _committed(uid), "folderUid": "f1", "overwrite": True, "message": "deploy 42"}
        for uid in UIDS
    ]
    assert [f["title"] for f in grafana.folders] == ["Ops"]


def test_token_is_sent_as_a_bearer_header_on_every_request(grafana: FakeGrafana) -> None:
    """token= authenticates each request with Authorization: Bearer."""
    _import(grafana)
    assert {r.authorization for r in grafana.requests} == {TOKEN_HEADER}


def test_user_and_password_are_sent_as_basic_auth(grafana: FakeGrafana) -> None:
    """user=/password= authenticate each request with HTTP basic auth."""
    import_dashboards(grafana.url, user="admin", password="pa55")
    assert {r.authorization for r in grafana.requests} == {BASIC_HEADER}


def test_existing_folder_is_found_by_title_and_reused(grafana: FakeGrafana) -> None:
    """A folder with the title already there is used, not created again."""
    grafana.folders.append({"id": 7, "uid": "ops-folder", "title": "Resilience"})
    report = _import(grafana)
    assert (report.folder_uid, report.folder_created) == ("ops-folder", False)
    assert grafana.calls("POST", "/api/folders") == []
    assert {s.body["folderUid"] for s in grafana.calls("POST", "/api/dashboards/db")} == {
        "ops-folder"
    }


# -- idempotence ---------------------------------------------------------------------------------
def test_second_import_reports_unchanged_and_saves_nothing(grafana: FakeGrafana) -> None:
    """Importing the same dashboards again sends no save and leaves versions alone."""
    _import(grafana)
    saves_before = len(grafana.calls("POST", "/api/dashboards/db"))
    report = _import(grafana)
    assert [(d.action, d.version) for d in report.dashboards] == [("unchanged", 1)] * 2
    assert len(grafana.calls("POST", "/api/dashboards/db")) == saves_before


def test_second_import_reuses_the_folder_it_created(grafana: FakeGrafana) -> None:
    """The folder is created once across imports."""
    _import(grafana)
    report = _import(grafana)
    assert report.folder_created is False
    assert len(grafana.calls("POST", "/api/folders")) == 1


def test_dashboard_changed_in_grafana_is_updated(grafana: FakeGrafana) -> None:
    """Only a dashboard whose stored JSON differs is saved again, reported updated."""
    _import(grafana)
    grafana.dashboards["resilience-service"]["dashboard"]["title"] = "edited by hand"
    report = _import(grafana)
    assert report.action("resilience-service") == "updated"
    assert report.action("resilience-overview") == "unchanged"
    saves = grafana.calls("POST", "/api/dashboards/db")
    assert [s.body["dashboard"]["uid"] for s in saves[2:]] == ["resilience-service"]
    assert saves[-1].body["dashboard"] == _committed("resilience-service")


def test_dashboard_in_another_folder_is_moved_back(grafana: FakeGrafana) -> None:
    """Same JSON but in another folder counts as a change: saved into the target folder."""
    _import(grafana)
    grafana.dashboards["resilience-overview"]["meta"]["folderUid"] = "elsewhere"
    report = _import(grafana)
    assert report.action("resilience-overview") == "updated"
    assert grafana.dashboards["resilience-overview"]["meta"]["folderUid"] == "f1"


# -- errors --------------------------------------------------------------------------------------
def test_rejected_credentials_raise_naming_the_dashboard_and_401(grafana: FakeGrafana) -> None:
    """A 401 stops the import before anything is created, naming dashboard and status."""
    with pytest.raises(GrafanaImportError) as caught:
        import_dashboards(grafana.url, token="wrong")
    assert (caught.value.status, caught.value.dashboard) == (401, "resilience-overview")
    assert "'Resilience overview' (uid resilience-overview)" in str(caught.value)
    assert "HTTP 401 Unauthorized" in str(caught.value)
    assert grafana.calls("POST", "/api/folders") == []


def test_version_mismatch_on_save_raises_naming_the_dashboard_and_412(
    grafana: FakeGrafana,
) -> None:
    """A 412 from the save names the dashboard, the status and Grafana's reason."""
    grafana.failures["POST", "/api/dashboards/db"] = (
        412,
        {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"},
    )
    with pytest.raises(GrafanaImportError) as caught:
        _import(grafana)
    message = str(caught.value)
    assert (caught.value.status, caught.value.dashboard) == (412, "resilience-overview")
    assert "saving dashboard 'Resilience overview'" in message
    assert "HTTP 412 Precondition Failed (version mismatch" in message
    assert "changed by someone else" in message


def test_server_error_raises_naming_the_dashboard_and_500(grafana: FakeGrafana) -> None:
    """A 5xx while reading a dashboard names it and the status."""
    grafana.failures["GET", "/api/dashboards/uid/resilience-service"] = (
        500,
        {"message": "database is locked"},
    )
    with pytest.raises(GrafanaImportError) as caught:
        _import(grafana)
    assert (caught.value.status, caught.value.dashboard) == (500, "resilience-service")
    assert "HTTP 500 Internal Server Error (Grafana server error)" in str(caught.value)
    assert "database is locked" in str(caught.value)


def test_folder_error_raises_naming_the_folder(grafana: FakeGrafana) -> None:
    """A failure while creating the folder names the folder and the status."""
    grafana.failures["POST", "/api/folders"] = (403, {"message": "Access denied"})
    with pytest.raises(GrafanaImportError) as caught:
        _import(grafana, folder="Ops")
    assert (caught.value.status, caught.value.dashboard) == (403, None)
    assert "folder 'Ops'" in str(caught.value)


def test_unreachable_grafana_raises_without_status() -> None:
    """No answer at all (connection refused) is a GrafanaImportError with status None."""
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(GrafanaImportError) as caught:
        import_dashboards(f"http://127.0.0.1:{port}", token="t", timeout=2)
    assert caught.value.status is None
    assert "resilience-overview" in str(caught.value)


# -- the command line ----------------------------------------------------------------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("resilience-otel")
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_import_end_to_end(grafana: FakeGrafana) -> None:
    """`resilience-otel dashboards import --url ... --token t` saves both and reports them."""
    result = _cli("dashboards", "import", "--url", grafana.url, "--token", "s3cret")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "folder 'Resilience' (created, uid f1)",
        "created   resilience-overview  Resilience overview",
        "created   resilience-service  Service detail",
    ]
    assert [s.body["dashboard"] for s in grafana.calls("POST", "/api/dashboards/db")] == [
        _committed(uid) for uid in UIDS
    ]
    assert {r.authorization for r in grafana.requests} == {TOKEN_HEADER}


def test_cli_import_takes_the_token_from_grafana_token(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --token, GRAFANA_TOKEN authenticates."""
    monkeypatch.setenv("GRAFANA_TOKEN", "s3cret")
    assert main(["dashboards", "import", "--url", grafana.url]) == 0
    assert {r.authorization for r in grafana.requests} == {TOKEN_HEADER}


def test_cli_import_reports_errors_on_stderr_with_exit_code_2(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused import prints the dashboard and status on one line and exits 2."""
    with pytest.raises(SystemExit) as caught:
        main(["dashboards", "import", "--url", grafana.url, "--user", "admin", "--password", "x"])
    assert caught.value.code == 2
    assert "resilience-overview" in capsys.readouterr().err
    assert grafana.calls("POST", "/api/dashboards/db") == []


def test_cli_generate_writes_the_committed_files(tmp_path: Path) -> None:
    """`dashboards generate --output-dir DIR` writes files identical to dashboards/*.json."""
    result = _cli("dashboards", "generate", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"{uid}.json" for uid in UIDS]
    for name in written:
        assert (tmp_path / name).read_bytes() == (ROOT / "dashboards" / name).read_bytes()
