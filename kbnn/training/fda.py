"""FDA's schedules (Xu et al., "Learning Frequency Domain Approximation for Binary Neural
Networks", arXiv 2103.00841; see docs/methods.md, section 'FDA'): `FDASchedule`, a
`QuantizerSchedule` of the number of Fourier terms ("n_terms") and of the noise adaptation
weight ("alpha") of every `kbnn.quantizers.FDASign`, and `fda_schedule_values`, its values."""

from __future__ import annotations

import math

import keras

from kbnn.quantizers._checks import check_non_negative, check_positive_int
from kbnn.quantizers.fda import FDASign
from kbnn.training.callbacks import QuantizerSchedule, _check_total_epochs, _epochs_of_fit

__all__ = ["FDASchedule", "fda_schedule_values"]


def fda_schedule_values(epoch: int, total_epochs: int, n_start: int = 10, n_end: int = 19,
                        alpha: float = 0.1) -> tuple[int, float]:
    """(n_terms, alpha) during epoch `epoch` (0-based) of `total_epochs`.

    * ``n_terms = n_start + floor((n_end - n_start) * epoch / (E - 1))``: from n_start at the
      first epoch to n_end at the last (the paper's setting 3, Sec. 3.2: n grows from a moderate
      n_s = 9 to n_p = 2 n_s; in kbnn's count of terms, 10 to 19).
    * ``alpha = alpha_0 (1 + cos(pi (epoch + 1) / E)) / 2``: decreasing, and 0 in the last epoch
      (the paper: alpha "is gradually decreased during training and reaches 0 at the end";
      the cosine and alpha_0 = 0.1 are those of BiBench's FDA code, arXiv 2301.11233).

    Epochs past the end stay at (n_end, 0). `total_epochs` must be a strictly positive integer.
    """
    total_epochs = _check_total_epochs("fda_schedule_values", total_epochs)
    last = max(total_epochs - 1, 1)
    progress = min(max(epoch / last, 0.0), 1.0)
    n_terms = n_start + math.floor((n_end - n_start) * progress + 1e-9)
    phase = min(max((epoch + 1) / total_epochs, 0.0), 1.0)
    value = alpha * (1.0 + math.cos(math.pi * phase)) / 2.0
    return int(n_terms), (0.0 if phase >= 1.0 else value)


@keras.saving.register_keras_serializable(package="kbnn")
class FDASchedule(QuantizerSchedule):
    """Moves ``n_terms`` and ``alpha`` of every `kbnn.quantizers.FDASign` at the start of each
    epoch (FDA, arXiv 2103.00841; see docs/methods.md, section 'FDA'), with the values of
    `fda_schedule_values`: the number of Fourier terms grows from `n_start` to `n_end` and the
    weight of the noise adaptation module decays to 0 in the last epoch. A `QuantizerSchedule`
    restricted to `FDASign`, logged as ``fda_n_terms`` and ``fda_alpha``.

    Args:
        n_start: terms in the first epoch (10, the paper's n = 9).
        n_end: terms in the last epoch (19, the paper's n = 18), >= n_start.
        alpha: alpha in the (virtual) epoch before the first (0.1); None leaves alpha alone
            (quantizers without a noise adaptation module have none).
        total_epochs: E; defaults to the `epochs` argument of `fit`.
    """

    def __init__(self, n_start: int = 10, n_end: int = 19, alpha: float | None = 0.1,
                 total_epochs: int | None = None):
        self.n_start = check_positive_int("FDASchedule", "n_start", n_start)
        self.n_end = check_positive_int("FDASchedule", "n_end", n_end)
        if self.n_end < self.n_start:
            raise ValueError(
                "Invalid value for argument `n_end` of FDASchedule. Expected a value >= "
                f"n_start={self.n_start}. Received n_end={n_end!r}.")
        self.alpha = None if alpha is None else check_non_negative("FDASchedule", "alpha", alpha)
        self.total_epochs = _check_total_epochs("FDASchedule", total_epochs, allow_none=True)
        schedules = {"n_terms": self._n_terms_at}
        if self.alpha is not None:
            schedules["alpha"] = self._alpha_at
        super().__init__(schedules, update_freq="epoch", quantizer_class=FDASign,
                         log_prefix="fda_")

    def _total_epochs(self) -> int:
        return _epochs_of_fit("FDASchedule", self.total_epochs, self.params)

    def values(self, epoch: int) -> tuple[int, float]:
        """(n_terms, alpha) of `epoch`."""
        return fda_schedule_values(epoch, self._total_epochs(), self.n_start, self.n_end,
                                   0.0 if self.alpha is None else self.alpha)

    def _n_terms_at(self, epoch: int) -> float:
        return float(self.values(epoch)[0])

    def _alpha_at(self, epoch: int) -> float:
        return self.values(epoch)[1]

    def get_config(self) -> dict:
        return {"n_start": self.n_start, "n_end": self.n_end, "alpha": self.alpha,
                "total_epochs": self.total_epochs}

    @classmethod
    def from_config(cls, config: dict) -> FDASchedule:
        return cls(**config)
