"""Training utilities: callbacks, distillation, two-step training and recipes.

* `QuantizerSchedule` drives a named non-trainable variable of the model's quantizers (IR-Net's
  EDE t and k, a temperature tau, ...) from a schedule per epoch or per step; `EDESchedule` is
  IR-Net's schedule of t and k (arXiv 1909.10788) built on it.
* `Distiller` trains a student against frozen teachers with ReActNet's `DistributionLoss`
  (arXiv 2003.03488) and BNext's consecutive assistant teachers (`AssistantTeacherSchedule`,
  arXiv 2211.12933), with feature-level terms (`FeatureDistillation`: a loss over named layers'
  outputs, e.g. DIR-Net's `RepresentationDistillation` or LCR-BNN's `LipschitzRetentionLoss`).
* `to_step2` / `to_step1` convert between the two steps of two-step training (ReActNet;
  AdamBNN, arXiv 2106.11309); `weight_decay_exclusions` / `exclude_binary_weights_from_decay`
  keep weight decay off the binary latent weights.
* `reactnet_a`, `bnext_t`, `bireal_net_18`: published recipes as `Recipe` objects.
"""

from kbnn.training.callbacks import EDESchedule, QuantizerSchedule, ede_schedule_values
from kbnn.training.distill import (
    AssistantTeacherSchedule,
    Distiller,
    DistributionLoss,
    FeatureDistillation,
)
from kbnn.training.recipes import (
    EpochCosineDecay,
    EpochLinearDecay,
    Recipe,
    bireal_net_18,
    bnext_t,
    is_conv_kernel,
    reactnet_a,
)
from kbnn.training.two_step import (
    exclude_binary_weights_from_decay,
    replace_weight_quantizers,
    to_step1,
    to_step2,
    weight_decay_exclusions,
)

__all__ = ["EDESchedule", "QuantizerSchedule", "ede_schedule_values"]
__all__ += ["AssistantTeacherSchedule", "Distiller", "DistributionLoss", "FeatureDistillation"]
__all__ += ["EpochCosineDecay", "EpochLinearDecay", "Recipe", "bireal_net_18", "bnext_t",
            "is_conv_kernel", "reactnet_a"]
__all__ += ["exclude_binary_weights_from_decay", "replace_weight_quantizers", "to_step1",
            "to_step2", "weight_decay_exclusions"]

from kbnn.training.bnext import bnext_tau, bnext_tau_schedule

__all__ += ["bnext_tau", "bnext_tau_schedule"]

from kbnn.training.recu import ReCUTauSchedule, recu_tau

__all__ += ["ReCUTauSchedule", "recu_tau"]

from kbnn.training.fda import FDASchedule, fda_schedule_values
from kbnn.training.losses import LipschitzRetentionLoss, RepresentationDistillation

__all__ += ["FDASchedule", "LipschitzRetentionLoss", "RepresentationDistillation",
            "fda_schedule_values"]

from kbnn.training.first_step import build_optimizer

__all__ += ["build_optimizer"]
