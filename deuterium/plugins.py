"""A registry of named plug-in classes (data types, tasks): one place for the registration rules.

Hand-written rather than taken from a library: it is a dict with two rules, that a name registers once
(timm only warns) and that an unknown name's error lists the registered ones (Ludwig's get_from_registry).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from deuterium.errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind, self.classes = kind, {}

    def register(self, name: str):
        """Class decorator: `@registry.register("image")` sets the class's `name` and records it."""

        def wrap(cls: T) -> T:
            if name in self.classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self.classes[name] = cls
            return cls

        return wrap

    def registered(self) -> dict[str, T]:
        return dict(self.classes)

    def get(self, name: str) -> T:
        if name not in self.classes:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self.classes))}")
        return self.classes[name]
