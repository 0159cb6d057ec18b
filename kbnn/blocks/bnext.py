"""BNext basic block: an ELM-Attention or FFN 3x3 unit, then one or two FFN 1x1 units."""

from __future__ import annotations

import keras
from keras import ops

from kbnn.blocks._common import (
    BinaryBlock,
    check_pad_values,
    check_positive_int,
    check_same_or_double_width,
    check_strides,
)
from kbnn.layers.bnext import GATES, BNextFFN, ELMAttention, check_kernel_clip
from kbnn.quantizers._checks import check_bool, check_choice, check_int_in_range

__all__ = ["BNextBlock"]

MODES = ("scale", "bias")


@keras.saving.register_keras_serializable(package="kbnn")
class BNextBlock(BinaryBlock):
    """BNext basic block (Guo, Bethge, Meinel, Yang, "Towards Optimization-Friendly Binary
    Neural Network", TMLR 2023, arXiv 2211.12933; see docs/methods.md, section 'BNext'; after
    the official `src/bnext.py::BasicBlock`). With C = input channels:

        x   = ELMAttention_s(x_in)   if mode == "scale" and elm_attention   (3x3, C -> C)
              BNextFFN3x3_s(x_in)    otherwise
        out = BNextFFN1x1(x)                                       # out_channels == C
        out = concat(BNextFFN1x1_a(x), BNextFFN1x1_b(x))           # out_channels == 2C

    Every unit (`kbnn.layers.ELMAttention`, `kbnn.layers.BNextFFN`) holds one binary conv
    (`LearnableBias` -> `HardSign` input, `BNextWeight` kernel, no bias) followed by BN and
    PReLU, the info-recoupling SE gate and its own residual; the channel-doubling form runs two
    independent 1x1 units on the same tensor and concatenates them (C -> 2C). Binary convs:
    2 (same width) or 3 (doubling). `batch_norm_pairs()` lists each binary conv with the BN
    after it.

    In the official network, block i of the channel list uses mode "bias" for i = 1 and
    "scale" for even i, "bias" for odd i after that; stride 2 wherever the width changes
    (except into the first block's width).

    The ablation switches of the official code: ``elm_attention=False`` always uses the FFN 3x3
    unit (`BasicBlock_No_ELM_Attention`), ``info_recoupling=False`` drops the SE-gated mix
    in every unit (`BasicBlock_No_Infor_Recoupling`; its FFN units then have no second BN, as
    the official code). `se_bits=8` is the SE branch of the official 8-bit variant
    (`bnext_quant.py`): 8-bit `FakeQuant` on the SE convs, which
    ``kbnn.converters.convert(model, int8=True)`` turns into int8 ops next to the
    `LceBconv2d` (the stem and the classifier of that variant are ordinary layers of the
    model: `QuantConv2D` / `QuantDense` with `FakeQuant` quantizers).

    The weights are binary only once their temperature tau is below 1e-7: anneal it with
    ``kbnn.training.bnext.bnext_tau_schedule()`` (tau = 0.9**epoch) before converting.

    Args:
        out_channels: C (same width) or 2C (channel doubling); checked when the block is built.
        strides: 1 or 2 (stride of the 3x3 unit, whose residual is average-pooled 2x2).
        mode: "scale" (ELM-Attention 3x3 unit, the official default) or "bias" (FFN 3x3).
        elm_attention, info_recoupling: the official ablation switches (both True).
        pad_values: SAME padding of the 3x3 conv's binarized input: 0.0 zeros (official), 1.0
            the +1 level (LCE's native "same-one").
        se_ratio, se_gate, se_bits: the SE branch (8, "sigmoid", None; see
            `kbnn.layers.SqueezeExpand`).
        kernel_clip: latent kernels are clipped to [-kernel_clip, kernel_clip] after each
            update (1.5, the official in-place clamp; None: no constraint).
        input_quantizer: quantizer of every binary conv's input (alias, config dict,
            `Quantizer` instance, or None for float inputs); default "hard_sign".
        kernel_quantizer: quantizer of every binary conv's kernel (same forms); default
            "bnext_weight".
    """

    def __init__(self, out_channels: int, strides: int = 1, mode: str = "scale",
                 elm_attention: bool = True, info_recoupling: bool = True,
                 pad_values: float = 0.0, se_ratio: int = 8, se_gate: str = "sigmoid",
                 se_bits: int | None = None, kernel_clip: float | None = 1.5,
                 input_quantizer="hard_sign", kernel_quantizer="bnext_weight", **kwargs):
        super().__init__(**kwargs)
        owner = "BNextBlock"
        self.out_channels = check_positive_int(owner, "out_channels", out_channels)
        self.strides = check_strides(owner, strides)
        self.mode = check_choice(owner, "mode", mode, MODES)
        self.elm_attention = check_bool(owner, "elm_attention", elm_attention)
        self.info_recoupling = check_bool(owner, "info_recoupling", info_recoupling)
        self.pad_values = check_pad_values(owner, pad_values)
        self.se_ratio = check_positive_int(owner, "se_ratio", se_ratio)
        self.se_gate = check_choice(owner, "se_gate", se_gate, GATES)
        self.se_bits = None if se_bits is None else check_int_in_range(owner, "se_bits",
                                                                       se_bits, 2, 16)
        self.kernel_clip = check_kernel_clip(owner, kernel_clip)
        self._init_quantizers(input_quantizer, kernel_quantizer)

    @property
    def uses_attention(self) -> bool:
        """True when the 3x3 unit is the ELM-Attention unit (mode "scale", elm_attention)."""
        return self.mode == "scale" and self.elm_attention

    @property
    def doubles_channels(self) -> bool:
        """True for the channel-doubling form (out_channels == 2 * input channels)."""
        return self.built and self.out_channels != self._in_channels

    def _unit_kwargs(self) -> dict:
        return {"info_recoupling": self.info_recoupling, "se_ratio": self.se_ratio,
                "se_gate": self.se_gate, "se_bits": self.se_bits,
                "kernel_clip": self.kernel_clip}

    def _quantizers(self) -> dict:
        return {"input_quantizer": self._input_quantizer_spec.serialize(),
                "kernel_quantizer": self._kernel_quantizer_spec.serialize()}

    def build(self, input_shape):
        channels = check_same_or_double_width(self, input_shape[-1])
        self._in_channels = int(channels)
        name = self.name
        if self.uses_attention:
            self.unit3x3 = ELMAttention(strides=self.strides, pad_values=self.pad_values,
                                        name=f"{name}_attention", **self._unit_kwargs(),
                                        **self._quantizers())
        else:
            self.unit3x3 = BNextFFN(3, strides=self.strides, pad_values=self.pad_values,
                                    name=f"{name}_ffn3x3", **self._unit_kwargs(),
                                    **self._quantizers())
        parts = [""] if self.out_channels == channels else ["_1", "_2"]
        self.units1x1 = [BNextFFN(1, name=f"{name}_ffn1x1{part}", **self._unit_kwargs(),
                                  **self._quantizers()) for part in parts]
        self.unit3x3.build(tuple(input_shape))
        shape = tuple(self.unit3x3.compute_output_shape(tuple(input_shape)))
        for unit in self.units1x1:
            unit.build(shape)

    @property
    def units(self) -> list:
        """The block's units in call order (the 3x3 unit, then the 1x1 unit(s))."""
        return [self.unit3x3, *self.units1x1]

    def _sublayers(self) -> list:
        return [layer for unit in self.units for layer in
                (unit.binary_conv, unit.norm1, unit.norm2)]

    @property
    def binary_layers(self) -> list:
        """The block's binary `QuantConv2D` layers, in call order."""
        return [conv for unit in self.units for conv in unit.binary_layers]

    def _conv_batch_norms(self) -> list[tuple]:
        return [(unit.binary_conv, unit.norm1) for unit in self.units]

    def _output_channels(self, input_channels: int) -> int:
        return self.out_channels

    def call(self, inputs, training=None):
        x = self.unit3x3(inputs, training=training)
        branches = [unit(x, training=training) for unit in self.units1x1]
        return branches[0] if len(branches) == 1 else ops.concatenate(branches, axis=-1)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "strides": self.strides, "mode": self.mode,
                "elm_attention": self.elm_attention, "info_recoupling": self.info_recoupling,
                "pad_values": self.pad_values, "se_ratio": self.se_ratio,
                "se_gate": self.se_gate, "se_bits": self.se_bits,
                "kernel_clip": self.kernel_clip, **self._quantizer_config()}
