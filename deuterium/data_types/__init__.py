"""Data types: how a row becomes model input. Importing this package registers the built-in ones (no torch)."""

from deuterium.data_types import audio, image, tabular  # noqa: F401  (registers)
from deuterium.data_types.base import _PLUGINS, DataType, Decoder, registered

__all__ = ["DataType", "Decoder", "get", "registered"]

get = _PLUGINS.get
