"""The implementation behind :mod:`resilience_otel.grafana` (documented there)."""

from __future__ import annotations

import http
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from .._core.exceptions import ConfigError

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_MESSAGE",
    "DashboardImport",
    "GrafanaImportError",
    "ImportReport",
    "build_dashboards",
    "import_dashboards",
    "render_dashboard",
    "write_dashboards",
]

JsonObject = dict[str, object]
ImportAction = Literal["created", "updated", "unchanged"]

DEFAULT_FOLDER = "Resilience"
"""The Grafana folder the dashboards are imported into by default."""
DEFAULT_MESSAGE = "Provisioned by resilience-otel"
"""The version-history message of each saved dashboard by default."""
# Set by Grafana on every save; not part of what we generate.
_SERVER_FIELDS = frozenset({"id", "version"})
_HINTS = {
    401: "check the token or the user and password",
    403: "the credentials may not create folders or save dashboards",
    404: "is the URL the Grafana base URL?",
    412: "version mismatch: the dashboard changed in Grafana meanwhile, or another "
    "dashboard in the folder has the same title",
}


class GrafanaImportError(RuntimeError):
    """Importing into Grafana failed; the message names the dashboard (or folder) and status.

    Attributes:
        dashboard: uid of the dashboard being imported, ``None`` for the folder step.
        status: HTTP status Grafana answered with, ``None`` when there was no answer.
    """

    def __init__(self, message: str, *, dashboard: str | None, status: int | None) -> None:
        super().__init__(message)
        self.dashboard = dashboard
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardImport:
    """What importing one dashboard did.

    ``version`` and ``url`` are what Grafana reports for the saved (or unchanged) dashboard.
    """

    uid: str
    title: str
    action: ImportAction
    version: int | None
    url: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """The outcome of :func:`import_dashboards`: the folder used and one entry per dashboard."""

    folder: str
    folder_uid: str
    folder_created: bool
    dashboards: tuple[DashboardImport, ...]

    def action(self, uid: str) -> ImportAction:
        """What happened to the dashboard ``uid``; ``KeyError`` if it was not imported."""
        for item in self.dashboards:
            if item.uid == uid:
                return item.action
        raise KeyError(uid)


_URL_RULE = "an http:// or https:// URL with a host, e.g. http://localhost:3000"


def _check_url(url: object) -> str:
    """``url`` if it is an ``http``/``https`` URL with a host and a valid port.

    Raises:
        ConfigError: naming ``url``, the value and what a Grafana URL looks like.
    """
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number or out of range
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(f"url must be {_URL_RULE}, got {url!r}", field="url")
    return str(url)


# -- build and write -----------------------------------------------------------------------------
def build_dashboards() -> dict[str, JsonObject]:
    """Every dashboard as Grafana's JSON model, keyed by uid (needs the ``grafana`` extra)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    from .dashboards import overview_dashboard, service_dashboard

    models: dict[str, JsonObject] = {}
    for board in (overview_dashboard(), service_dashboard()):
        # The round trip turns SDK objects and enums into plain JSON values.
        model: JsonObject = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        models[str(model["uid"])] = model
    return models


def render_dashboard(model: Mapping[str, object]) -> str:
    """A dashboard's JSON as committed: two-space indent, sorted keys, trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(
    directory: str | os.PathLike[str],
    dashboards: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Path]:
    """Write each dashboard to ``directory/<uid>.json``; return the paths written.

    Args:
        directory: created when missing.
        dashboards: uid -> JSON model; ``None`` builds them with :func:`build_dashboards`.
    """
    models = build_dashboards() if dashboards is None else dashboards
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, model in sorted(models.items()):
        path = target / f"{uid}.json"
        path.write_text(render_dashboard(model), encoding="utf-8")
        paths.append(path)
    return paths


# -- import --------------------------------------------------------------------------------------
def import_dashboards(
    url: str,
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    folder: str = DEFAULT_FOLDER,
    message: str = DEFAULT_MESSAGE,
    dashboards: Mapping[str, Mapping[str, object]] | None = None,
    timeout: float = 10.0,
) -> ImportReport:
    """Create or update the dashboards in the Grafana at ``url``, in the folder titled ``folder``.

    The folder is created when no top-level folder has that title. Each dashboard is saved with
    ``overwrite`` and ``message`` (shown in Grafana's version history) unless Grafana already
    holds the same JSON in that folder; see the module docstring.

    Args:
        url: Grafana's base URL, e.g. ``http://localhost:3000``.
        token: service account token (sent as ``Authorization: Bearer``).
        user: basic-authentication user, instead of a token.
        password: basic-authentication password (with ``user``).
        folder: title of the folder to import into.
        message: commit message for each saved dashboard.
        dashboards: uid -> JSON model; ``None`` imports :func:`build_dashboards`.
        timeout: seconds per HTTP request.

    Raises:
        ConfigError: ``url`` is not an http(s) URL with a host.
        ValueError: both a token and a user were given, or a user without a password.
        GrafanaImportError: Grafana refused a request or could not be reached.
    """
    _check_url(url)
    credential = _credential(token, user, password)
    models = build_dashboards() if dashboards is None else dashboards

    from grafana_client import GrafanaApi

    api = GrafanaApi.from_url(url, credential=credential, timeout=timeout)
    try:
        # Read everything first: a bad credential fails before anything is created.
        current = {uid: _fetch(api, uid, _title(uid, model)) for uid, model in models.items()}
        folder_uid, folder_created = _ensure_folder(api, folder)
        results = tuple(
            _save(api, uid, model, current[uid], folder_uid=folder_uid, message=message)
            for uid, model in models.items()
        )
    finally:
        api.client.s.close()  # grafana-client offers no close(); its HTTP session is `s`
    return ImportReport(
        folder=folder, folder_uid=folder_uid, folder_created=folder_created, dashboards=results
    )


def _credential(
    token: str | None, user: str | None, password: str | None
) -> str | tuple[str, str] | None:
    if token and user:
        raise ValueError("pass either a token or a user and password, not both")
    if user:
        if password is None:
            raise ValueError(f"user {user!r} needs a password")
        return (user, password)
    return token or None


def _title(uid: str, model: Mapping[str, object]) -> str:
    return str(model.get("title") or uid)


@contextmanager
def _grafana_errors(what: str, *, dashboard: str | None) -> Iterator[None]:
    """Turn grafana-client's and the network's errors into a :class:`GrafanaImportError`."""
    from grafana_client.client import GrafanaException

    try:
        yield
    except GrafanaException as exc:
        status = int(exc.status_code) or None  # grafana-client uses 0 for "no response"
        raise GrafanaImportError(
            f"{what}: {_describe(status)}: {exc.message}", dashboard=dashboard, status=status
        ) from exc
    except OSError as exc:  # niquests' connection errors are OSErrors
        raise GrafanaImportError(
            f"{what}: cannot reach Grafana: {_network_reason(exc)}",
            dashboard=dashboard,
            status=None,
        ) from exc


def _network_reason(exc: BaseException) -> str:
    """The innermost OS reason (``Connection refused``) under the HTTP client's wrappers."""
    reason, seen = str(exc), 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:  # a chain is short; a cycle must not hang us
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return reason


def _describe(status: int | None) -> str:
    if status is None:
        return "no answer from Grafana"
    try:
        text = f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        text = f"HTTP {status}"
    hint = "Grafana server error" if status >= 500 else _HINTS.get(status)
    return f"{text} ({hint})" if hint else text


def _fetch(api: GrafanaApi, uid: str, title: str) -> JsonObject | None:
    """Grafana's ``{"dashboard": ..., "meta": ...}`` for ``uid``, ``None`` if it has none."""
    from grafana_client.client import GrafanaClientError

    with _grafana_errors(f"reading dashboard {title!r} (uid {uid})", dashboard=uid):
        try:
            answer: object = api.dashboard.get_dashboard(uid)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise
    return answer if isinstance(answer, dict) else None


def _ensure_folder(api: GrafanaApi, title: str) -> tuple[str, bool]:
    """The uid of the top-level folder titled ``title``, and whether it had to be created."""
    with _grafana_errors(f"finding or creating folder {title!r}", dashboard=None):
        folders: object = api.folder.get_all_folders()
        for item in folders if isinstance(folders, list) else []:
            if isinstance(item, dict) and item.get("title") == title:
                return str(item["uid"]), False
        created: object = api.folder.create_folder(title)
    if not isinstance(created, dict) or "uid" not in created:
        raise GrafanaImportError(
            f"creating folder {title!r}: unexpected answer {created!r}", dashboard=None, status=None
        )
    return str(created["uid"]), True


def _save(
    api: GrafanaApi,
    uid: str,
    model: Mapping[str, object],
    current: JsonObject | None,
    *,
    folder_uid: str,
    message: str,
) -> DashboardImport:
    """Save ``model`` unless ``current`` (what Grafana holds) already matches it."""
    title = _title(uid, model)
    dashboard = {**_without_server_fields(model), "uid": uid}
    if current is not None and _unchanged(current, dashboard, folder_uid):
        return DashboardImport(
            uid=uid,
            title=title,
            action="unchanged",
            version=_int_or_none(_get(current, "dashboard", "version")),
            url=_str_or_none(_get(current, "meta", "url")),
        )
    payload = {
        "dashboard": dashboard,
        "folderUid": folder_uid,
        "overwrite": True,
        "message": message,
    }
    with _grafana_errors(f"saving dashboard {title!r} (uid {uid})", dashboard=uid):
        answer: object = api.dashboard.update_dashboard(payload)
    saved: Mapping[str, object] = answer if isinstance(answer, dict) else {}
    return DashboardImport(
        uid=uid,
        title=title,
        action="created" if current is None else "updated",
        version=_int_or_none(saved.get("version")),
        url=_str_or_none(saved.get("url")),
    )


def _without_server_fields(model: Mapping[str, object]) -> JsonObject:
    return {key: value for key, value in model.items() if key not in _SERVER_FIELDS}


def _unchanged(current: Mapping[str, object], dashboard: JsonObject, folder_uid: str) -> bool:
    stored = current.get("dashboard")
    if not isinstance(stored, dict):
        return False
    return (
        _without_server_fields(stored) == dashboard
        and _get(current, "meta", "folderUid") == folder_uid
    )


def _get(data: Mapping[str, object], outer: str, inner: str) -> object:
    section = data.get(outer)
    return section.get(inner) if isinstance(section, dict) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
