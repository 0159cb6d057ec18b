"""Training utilities: callbacks (and later optimizers, losses, metrics)."""

from kbnn.training.callbacks import EDESchedule, ede_schedule_values

__all__ = ["EDESchedule", "ede_schedule_values"]
