"""Problem types register themselves here; the rest of the code only asks the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deuterium.errors import ConfigError

if TYPE_CHECKING:
    from deuterium.problems.base import ProblemType
    from deuterium.settings import ExperimentBase

_REGISTRY: dict[str, type[ProblemType]] = {}


def register(name: str):
    def wrap(cls: type[ProblemType]) -> type[ProblemType]:
        if name in _REGISTRY:
            raise ValueError(f"problem type {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, exp: ExperimentBase | None = None) -> ProblemType:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown problem_type {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name](exp)


def of(exp: ExperimentBase) -> ProblemType:
    """The problem type of `exp`, serving it (multi-label classification differs from single-label)."""
    return get(exp.problem_type, exp)


def settings_models() -> list[type]:
    return [_REGISTRY[n].Settings for n in names()]
