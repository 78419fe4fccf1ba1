"""The configuration reference: one table per config dataclass and the environment variables.

Everything here is read from the code (dataclass fields, class docstrings, the validators'
own error messages, the env tables), so the page cannot drift from what the package accepts.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any

import resilience_otel
from resilience_otel._config import env as env_module
from resilience_otel._config.envvalues import EnvVar
from resilience_otel._telemetry import redact

CLASSES = (
    "Policy",
    "BreakerConfig",
    "RetryConfig",
    "RetryOverride",
    "RetryBudgetConfig",
    "HealthConfig",
    "RedactionConfig",
)
# which dataclass an EnvVar's ``section`` fills
SECTIONS = {"breaker": "BreakerConfig", "retry": "RetryConfig", "health": "HealthConfig"}
_DURATION_NAME = re.compile(r"(delay|timeout|period|interval|window|_after|_target)$")
_SECONDS = re.compile(r"\bseconds?\b")
_SECTION = re.compile(r"^(Args|Attributes):\s*$")
_ENTRY = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")
_BETWEEN = re.compile(r"must be between (\S+) and (\S+), got")
_BOUNDS = re.compile(r"must be (>=|>) (\S+?)(?: and <= (\S+?))?, got")


def field_docs(cls: type) -> dict[str, str]:
    """``field -> description`` from the ``Args:`` or ``Attributes:`` section of a docstring."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    docs: dict[str, str] = {}
    current: str | None = None
    inside = False
    for line in lines:
        if _SECTION.match(line):
            inside, current = True, None
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the section ended: back at the docstring's left margin
        stripped = line.strip()
        entry = _ENTRY.match(stripped) if line.startswith("    ") and line[4] != " " else None
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2)
        elif current and stripped:
            docs[current] += " " + stripped
    return docs


def prose(cls: type) -> str:
    """The docstring of ``cls`` without its ``Args:``/``Attributes:`` section."""
    kept = []
    skipping = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if _SECTION.match(line):
            skipping = True
            continue
        if skipping and (not line or line.startswith(" ")):
            continue
        skipping = False
        kept.append(line)
    return rst_to_md("\n".join(kept).strip())


def rst_to_md(text: str) -> str:
    """Docstrings use reST roles and double backticks; markdown wants single backticks."""
    text = re.sub(r":(?:class|func|meth|attr|mod|data):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def show(value: Any) -> str:
    """A default as a reader would write it in Python."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, frozenset | set):
        return "{" + ", ".join(sorted(show(v) for v in value)) + "}" if value else "frozenset()"
    if isinstance(value, Mapping):
        return "{}" if not value else repr(dict(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}()"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def default_of(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{show(field.default)}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{show(field.default_factory())}`"
    return "required"


Bounds = tuple[str, float, bool, float | None]


def bounds(cls: type, field: dataclasses.Field[Any]) -> Bounds | None:
    """``(kind, low, low_open, high)`` as the field's validator states them, by feeding it a
    value below any range and reading the error (so the page shows what is enforced)."""
    kind = "int" if re.fullmatch(r"int( \| None)?", str(field.type)) else "float"
    if not re.fullmatch(r"(int|float)( \| None)?", str(field.type)):
        return None
    required = {"service": "docs"} if cls.__name__ == "Policy" else {}
    probe: Any = -(10**30) if kind == "int" else -1e300
    try:
        cls(**required, **{field.name: probe})
    except resilience_otel.ConfigError as exc:
        message = str(exc)
    else:
        return None
    if match := _BETWEEN.search(message):
        return kind, float(match.group(1)), False, float(match.group(2))
    if match := _BOUNDS.search(message):
        high = None if match.group(3) is None else float(match.group(3))
        return kind, float(match.group(2)), match.group(1) == ">", high
    return None


def number(value: float) -> str:
    """``86400000`` rather than ``8.64e+07``: these are values to type into a variable."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"


def range_text(found: Bounds | None, scale: float = 1.0) -> str:
    if found is None:
        return ""
    _kind, low, low_open, high = found
    low_text = number(low * scale)
    if high is None:
        return f"> {low_text}" if low_open else f">= {low_text}"
    high_text = number(high * scale)
    return f"> {low_text}, <= {high_text}" if low_open else f"{low_text} to {high_text}"


def unit_of(field: dataclasses.Field[Any], doc: str, ms_fields: set[str]) -> str:
    kind = str(field.type)
    if field.name in ms_fields or _SECONDS.search(doc):
        return "seconds"
    if kind.startswith("float") and _DURATION_NAME.search(field.name):
        return "seconds"
    if kind.startswith("int"):
        return "count"
    if kind.startswith("float") and ("0..1" in doc or field.name.endswith("ratio")):
        return "ratio"
    return ""


def with_unit(range_: str, unit: str) -> str:
    """``> 0, <= 86400 s``: the unit only where it is not plain from the type."""
    if unit == "seconds":
        return f"{range_} s" if range_ else "seconds"
    if unit == "ratio" and not range_:
        return "ratio"
    return range_


def cell(text: str) -> str:
    """Table cell text; a ``|`` in a code span needs no escape (the table parser skips it)."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`"


def inherited_docs(cls: type) -> dict[str, str]:
    """Field docs of the classes a docstring refers to (``RetryOverride`` -> ``RetryConfig``),
    for fields documented only there."""
    docs: dict[str, str] = {}
    for name in re.findall(r":class:`~?([A-Za-z_.]+)`", inspect.getdoc(cls) or ""):
        other = getattr(resilience_otel, name.rpartition(".")[2], None)
        if isinstance(other, type) and other is not cls:
            for field, text in field_docs(other).items():
                docs.setdefault(field, f"as in `{other.__name__}`: {text}")
    return docs


def config_table(cls: type, ms_fields: set[str]) -> str:
    # Three columns: the type, default and range sit under the field name, so the description
    # keeps the width it needs on any screen.
    docs = {**inherited_docs(cls), **field_docs(cls)}
    rows = ["| Field | Default | Description |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        doc = docs.get(field.name, "")
        limits = with_unit(range_text(bounds(cls, field)), unit_of(field, doc, ms_fields))
        what = f"`{field.name}`<br>{code(str(field.type))}"
        described = cell(rst_to_md(doc)) + (f"<br>Range: {limits}" if limits else "")
        rows.append(f"| {what} | {cell(default_of(field))} | {described} |")
    return "\n".join(rows)


def _ms_fields(variables: Iterable[EnvVar], section: str) -> set[str]:
    return {v.field for v in variables if v.section == section and v.kind.startswith("ms")}


def classes_markdown() -> str:
    """One section per config dataclass: its docstring and a table of its fields."""
    variables = (*env_module.ENV_VARS, *env_module.HEALTH_ENV_VARS)
    ms_by_class = {cls: _ms_fields(variables, sec) for sec, cls in SECTIONS.items()}
    parts = []
    for name in CLASSES:
        cls = getattr(resilience_otel, name)
        table = config_table(cls, ms_by_class.get(name, set()))
        parts.append(f"### {name}\n\n{prose(cls)}\n\n{table}")
    return "\n\n".join(parts)


def env_row(var: EnvVar) -> str:
    cls = getattr(resilience_otel, SECTIONS[var.section])
    field = next(f for f in dataclasses.fields(cls) if f.name == var.field)
    scale = 1000.0 if var.kind.startswith("ms") else 1.0
    default = field.default
    if default is None:
        shown = "0 (none)" if var.kind == "ms_or_off" else "unset"
    elif isinstance(default, enum.Enum):
        shown = str(default.value)
    else:
        shown = number(float(default) * scale)
    return (
        "| "
        + " | ".join(
            (
                f"`{var.name}`",
                f"`{cls.__name__}.{var.field}`",
                code(var.unit) if "|" in var.unit else var.unit,
                range_text(bounds(cls, field), scale),
                f"`{shown}`",
                "" if var.small is None else f"{number(var.small)} ms",
            )
        )
        + " |"
    )


def env_markdown() -> str:
    """The environment variables ``Policy.from_env`` and ``HealthConfig.from_env`` read."""
    header = "| Variable | Sets | Unit | Range | Default | Warns below |\n|---|---|---|---|---|---|"
    policy = "\n".join(env_row(v) for v in env_module.ENV_VARS)
    health = "\n".join(env_row(v) for v in env_module.HEALTH_ENV_VARS)
    redaction = "\n".join(
        f"| `{var}` | `RedactionConfig.{field}` | {cell(what)} |"
        for var, field, what in redact.REDACTION_ENV_VARS
    )
    prefix = env_module.env_prefix("alpaca-v2")
    return f"""### Policy variables

`Policy.from_env(service)` reads these. Durations are **milliseconds** here (seconds in
Python). A variable prefixed with the service name overrides the global one for that service:
the prefix is the service name upper-cased with every character other than a letter or digit
turned into `_`, plus `_` (service `alpaca-v2` reads `{prefix}CB_FAILURE_THRESHOLD` before
`CB_FAILURE_THRESHOLD`). An unset or empty variable keeps the default. A duration set
above 0 but below the "Warns below" value is logged once as a likely seconds-for-milliseconds
mistake (`CB_RESET_TIMEOUT=60` is 60 ms, not a minute).

{header}
{policy}

### Redaction variables

Read by `Policy.from_env(service)` too, with the same `<SERVICE>_` prefix rule.

| Variable | Sets | Value |
|---|---|---|
{redaction}

### Health variables

`HealthConfig.from_env()` reads these (no per-service prefix).

{header}
{health}
"""


def markdown() -> str:
    """The generated part of docs/reference/configuration.md."""
    return (
        f"## Configuration classes\n\n{classes_markdown()}\n\n"
        f"## Environment variables\n\n{env_markdown()}"
    )
