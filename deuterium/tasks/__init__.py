"""Tasks: labels, loss, activation, metrics, plots. Importing this package registers the built-in ones."""

from deuterium.tasks import anomaly, classification, regression  # noqa: F401  (registers)
from deuterium.tasks.base import Metric, Task, registered

__all__ = ["Metric", "Task", "registered"]
