"""Data types: how a row becomes model input. Importing this package registers the built-in ones (no torch)."""

from deuterium.data_types import audio, image  # noqa: F401  (registers)
from deuterium.data_types.base import DataType, Decoder, registered

__all__ = ["DataType", "Decoder", "get", "registered"]


def get(name: str) -> type[DataType]:
    from deuterium.errors import ConfigError

    found = registered()
    if name not in found:
        raise ConfigError(f"unknown data type {name!r}; registered: {', '.join(sorted(found))}")
    return found[name]
