"""Optimizers for binary networks: `Bop` (Helwegen et al., arXiv 1906.02107), the latent-free
optimizer of binary weights; `CaseOptimizer`, which gives each variable to one of several
optimizers (`binary_predicate(model)` picks the binary weights); `HyperparameterScheduler`, a
callback that schedules any optimizer hyperparameter. See docs/training.md.
"""

from kbnn.optimizers.bop import Bop
from kbnn.optimizers.case import (
    BinaryPredicate,
    CaseOptimizer,
    binary_predicate,
    binary_variables,
    is_binary_variable,
)
from kbnn.optimizers.scheduler import HyperparameterScheduler

__all__ = [
    "BinaryPredicate",
    "Bop",
    "CaseOptimizer",
    "HyperparameterScheduler",
    "binary_predicate",
    "binary_variables",
    "is_binary_variable",
]
