"""Training utilities: callbacks (and later optimizers, losses, metrics).

`QuantizerSchedule` drives a named non-trainable variable of the model's quantizers (IR-Net's
EDE t and k, a temperature tau, ...) from a schedule per epoch or per step; `EDESchedule` is
IR-Net's schedule of t and k (arXiv 1909.10788) built on it.
"""

from kbnn.training.callbacks import EDESchedule, QuantizerSchedule, ede_schedule_values

__all__ = ["EDESchedule", "QuantizerSchedule", "ede_schedule_values"]
