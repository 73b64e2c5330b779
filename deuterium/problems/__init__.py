"""Problem types: (data type, task) pairs. Importing this package registers every built-in one."""

from deuterium.problems.registry import ProblemType, get, names, of, settings_models

__all__ = ["ProblemType", "get", "names", "of", "settings_models"]
