"""`orchestrator config [--reference]`: the settings in effect, or the reference of every setting.

Both read `Settings` (durable_orchestrator/settings.py) and nothing else, so the reference in
docs/configuration.md is regenerated, never edited: `orchestrator config --reference >
docs/configuration.md` (tests/test_readme.py fails when the file is stale).
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from durable_orchestrator.cli.common import fail
from durable_orchestrator.settings import Settings, get_settings

REGENERATE = "orchestrator config --reference > docs/configuration.md"
MASK = "****"
# Names of settings whose values are credentials; a field declared with repr=False is one too.
_SECRET_NAME = re.compile(r"(secret|api_key|password|token)$")


@dataclass(frozen=True)
class EnvNames:
    names: list[str]  # what the documentation gives; the first one is canonical
    bare: str | None  # the field name itself, which the alias list also makes readable


def env_names(name: str, field: FieldInfo) -> EnvNames:
    """The environment variables a field is read from. Without an alias that is the ORCH_
    name; with one it is each alias choice (matched case-insensitively, like every name)."""
    alias = field.validation_alias
    if not isinstance(alias, AliasChoices):
        prefix = str(Settings.model_config.get("env_prefix", ""))
        return EnvNames([f"{prefix}{name}".upper()], None)
    choices = [str(c) for c in alias.choices]
    names = list(dict.fromkeys(c.upper() for c in choices if c != name))
    bare = name.upper() if name in choices and name.upper() not in names else None
    return EnvNames(names, bare)


def is_secret(name: str, field: FieldInfo) -> bool:
    # A URL is kept out of repr for the password inside it; shown, only that password is masked.
    return (field.repr is False and not name.endswith("_url")) or bool(_SECRET_NAME.search(name))


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def _plain(value: Any) -> str:
    """A value as it would be written in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_plain(v) for v in value)
    return str(value)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if get_origin(annotation) in (list, tuple):
        (item, *_) = get_args(annotation) or (str,)
        if isinstance(item, type) and issubclass(item, BaseModel):  # parsed as JSON by pydantic-settings
            return "JSON list"
        return "comma-separated list"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _reference_default(name: str, field: FieldInfo) -> str:
    value = _default(field)
    if value is None:
        return "unset"
    if is_secret(name, field):
        # A default in the source is public by definition: say it is only a placeholder.
        return f"placeholder `{_plain(value)}`"
    if value == [] or value == "":
        return "empty"
    return f"`{_plain(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


REFERENCE_HEADER = f"""\
# Configuration

<!-- Generated from durable_orchestrator/settings.py by `orchestrator config --reference`.
Do not edit: change the field's description there, then run `{REGENERATE}`. -->

Every setting is read once, from the environment, by the one `Settings` object in
`durable_orchestrator/settings.py`. Standard names (`DATABASE_URL`, `TEMPORAL_ADDRESS`,
`OPENAI_BASE_URL`, `REDIS_URL`, `RATE_LIMIT`, ...) are read as they are; every other setting
carries the `ORCH_` prefix. Names are case-insensitive, lists are comma-separated, booleans are
`true`/`false`. No `.env` file is read.

`orchestrator config` prints the values in effect and where each came from (environment or
default), with secrets masked; it fails, naming the problem, when the settings would not start.

With `ORCH_ENVIRONMENT=production` every process (API, worker, CLI) refuses to start while
`ORCH_WEBHOOK_SECRET` is unset or a placeholder, while HS256 is selected and `ORCH_JWT_SECRET` is missing,
a placeholder or shorter than 32 characters, or while RS256 is selected without
`ORCH_JWT_PUBLIC_KEY`.
"""


def reference_markdown() -> str:
    """docs/configuration.md: one row per setting, in the order Settings declares them."""
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    bare_names = []
    for name, field in Settings.model_fields.items():
        env = env_names(name, field)
        if env.bare:
            bare_names.append(f"`{env.bare}` (as `{env.names[0]}`)")
        variables = ", ".join(f"`{n}`" for n in env.names)
        rows.append(
            f"| {variables} | {_cell(_type_name(field.annotation))} | "
            f"{_cell(_reference_default(name, field))} | {_cell(field.description or '')} |"
        )
    text = REFERENCE_HEADER + "\n" + "\n".join(rows) + "\n"
    if bare_names:
        text += (
            "\nAlso read under the bare field name, because the field's alias list includes it: "
            + ", ".join(bare_names)
            + ". Do not rely on these; use the names in the table.\n"
        )
    return text


def _masked_url(value: str) -> str:
    parts = urlsplit(value)
    if not parts.password:
        return value
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def effective_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value, source) per setting: the value as the environment would spell it,
    secrets masked (a placeholder default is shown, so it can be noticed), passwords inside
    URLs masked."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            shown = "unset"
        elif value == []:
            shown = "empty"
        elif is_secret(name, field) and value != _default(field):
            shown = MASK
        elif is_secret(name, field):
            shown = f"{_plain(value)} (placeholder)"
        else:
            shown = _plain(value).replace("\n", "\\n")
            if isinstance(value, str):
                shown = _masked_url(shown)
        source = "environment" if name in settings.model_fields_set else "default"
        rows.append((env_names(name, field).names[0], shown, source))
    return rows


def _variable(name: str) -> str:
    """The environment name of a field, for error messages (validation errors name fields)."""
    field = Settings.model_fields.get(name)
    return env_names(name, field).names[0] if field else name.upper()


def config(
    reference: bool = typer.Option(
        False, "--reference", help="Print the markdown reference of every setting (docs/configuration.md)."
    ),
) -> None:
    """Print the settings in effect (secrets masked), or with --reference the reference of all."""
    if reference:
        typer.echo(reference_markdown(), nl=False)
        return
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join([*(_variable(str(part)) for part in e["loc"]), str(e["msg"]).removeprefix("Value error, ")])
            for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}") from None
    rows = effective_rows(settings)
    width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 60)
    for variable, value, source in rows:
        typer.echo(f"{variable:<{width}}  {value:<{value_width}}  {source}")
