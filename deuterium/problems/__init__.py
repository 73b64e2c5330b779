"""Problem types. Importing this package registers every built-in one."""

from deuterium.problems import audio_classification, audio_regression  # noqa: F401  (registers)
from deuterium.problems.registry import get, names, of, register

__all__ = ["get", "names", "of", "register"]
