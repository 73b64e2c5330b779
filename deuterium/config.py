"""Load and validate params.yaml (or a resolved config written next to a model)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from deuterium import previous, problems
from deuterium.errors import ConfigError
from deuterium.problems.registry import settings_models
from deuterium.settings import ExperimentBase


@functools.cache
def _adapter() -> TypeAdapter:
    union = Union[tuple(settings_models())]  # noqa: UP007  (built at run time from the registry)
    return TypeAdapter(Annotated[union, Field(discriminator="problem_type")])


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s)"]
    for e in err.errors():
        parts = list(e["loc"])
        if parts and parts[0] in problems.names():  # the union's tag, not a key of the file
            parts = parts[1:]
        loc = ".".join(str(p) for p in parts) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README's settings table)"
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            msg = f"problem_type must be one of: {', '.join(problems.names())}"
        shown = e["type"] not in ("missing", "extra_forbidden") and not isinstance(e.get("input"), dict)
        lines.append(f"  {loc}: {msg}" + (f" (got {e['input']!r})" if shown else ""))
    return "\n".join(lines)


def parse(data: object, source: str = "params") -> ExperimentBase:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return _adapter().validate_python(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load(path: Path | str = "params.yaml", inherit: bool = True) -> ExperimentBase:
    """Validate a params file. With `previous_experiment` set, the keys it leaves out come from that
    experiment's resolved config (`inherit`; a resolved config is complete, so it is loaded with False)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if inherit and isinstance(data, dict):
        data = previous.inherit(data)
    return parse(data, str(path))


def dump(exp: ExperimentBase) -> str:
    """The resolved config: every setting with its value, loadable by `load`."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)
