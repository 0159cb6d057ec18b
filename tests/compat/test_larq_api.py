"""kbnn.compat.larq: every public name of larq 0.14 resolves to the right kbnn object (or raises
NotImplementedError saying why), larq's quantizer identifiers (aliases, class names, functions,
clip_value=None) work in the layers, and the conventions where kbnn differs on purpose."""

import ast
import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
import kbnn.compat.larq as lq
from kbnn import quantizers as kq

# larq 0.14's public API (its modules' __all__, or their public top-level names).
LARQ_PUBLIC = {
    "activations": ["hard_tanh", "leaky_tanh"],
    "callbacks": ["HyperparameterScheduler"],
    "constraints": ["WeightClip", "weight_clip"],
    "context": ["get_training_metrics", "metrics_scope", "quantized_scope", "should_quantize"],
    "layers": ["QuantConv1D", "QuantConv2D", "QuantConv2DTranspose", "QuantConv3D",
               "QuantConv3DTranspose", "QuantDense", "QuantDepthwiseConv2D",
               "QuantLocallyConnected1D", "QuantLocallyConnected2D", "QuantSeparableConv1D",
               "QuantSeparableConv2D"],
    "math": ["heaviside", "sign"],
    "metrics": ["FlipRatio"],
    "models": ["summary"],
    "optimizers": ["Bop", "CaseOptimizer"],
    "quantizers": ["ApproxSign", "DoReFa", "DoReFaQuantizer", "MagnitudeAwareSign", "NoOp",
                   "NoOpQuantizer", "Quantizer", "QuantizerType", "SteHeaviside", "SteSign",
                   "SteTern", "SwishSign", "approx_sign", "deserialize", "get",
                   "get_kernel_quantizer", "serialize", "ste_heaviside", "ste_sign", "ste_tern",
                   "swish_sign"],
    "utils": ["memory_as_readable_str", "patch_object", "register_alias",
              "register_keras_custom_object", "set_precision"],
}

UNSUPPORTED = [
    ("layers", "QuantConv3D"), ("layers", "QuantConv2DTranspose"),
    ("layers", "QuantConv3DTranspose"), ("layers", "QuantSeparableConv1D"),
    ("layers", "QuantLocallyConnected1D"), ("layers", "QuantLocallyConnected2D"),
    ("context", "quantized_scope"), ("context", "should_quantize"),
    ("context", "metrics_scope"), ("context", "get_training_metrics"),
]


def test_every_public_name_exists():
    for module, names in LARQ_PUBLIC.items():
        namespace = getattr(lq, module)
        for name in names:
            assert hasattr(namespace, name), f"lq.{module}.{name}"
    assert sorted(lq.__all__) == sorted(LARQ_PUBLIC)
    # importable by name, like larq's modules
    from kbnn.compat.larq import layers

    assert layers is lq.layers
    assert importlib.import_module("kbnn.compat.larq.quantizers") is lq.quantizers


def _installed_larq_public() -> dict | None:
    spec = importlib.util.find_spec("larq")
    if spec is None:
        return None
    root = pathlib.Path(spec.origin).parent
    found = {}
    for module in LARQ_PUBLIC:
        tree = ast.parse((root / f"{module}.py").read_text())
        declared, names = None, set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.add(node.name)
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                declared = set(ast.literal_eval(node.value))
        found[module] = declared if declared is not None and module != "quantizers" else (
            names | (declared or set()))
    return found


def test_installed_larq_has_no_other_public_name():
    """Cross-check against the installed larq's source, read without importing it."""
    public = _installed_larq_public()
    assert public is not None, "larq 0.14 must be installed (the dev and bench extras hold it)"
    for module, names in public.items():
        assert names <= set(LARQ_PUBLIC[module]) | {"QuantizerType"}, (module, names)


@pytest.mark.parametrize(("module", "name"), UNSUPPORTED)
def test_unsupported_names_raise_with_the_reason(module, name):
    with pytest.raises(NotImplementedError, match=r"not supported by kbnn.compat.larq: .+\."):
        getattr(getattr(lq, module), name)(1)


def test_names_resolve_to_kbnn_objects():
    identical = {
        lq.quantizers.SteSign: kq.SteSign, lq.quantizers.ApproxSign: kq.ApproxSign,
        lq.quantizers.SwishSign: kq.SwishSign, lq.quantizers.SteHeaviside: kq.SteHeaviside,
        lq.quantizers.MagnitudeAwareSign: kq.MagnitudeAwareSign,
        lq.quantizers.SteTern: kq.SteTern, lq.quantizers.DoReFa: kq.DoReFa,
        lq.quantizers.DoReFaQuantizer: kq.DoReFa, lq.quantizers.NoOp: kq.NoOp,
        lq.quantizers.NoOpQuantizer: kq.NoOp, lq.quantizers.Quantizer: kq.Quantizer,
        lq.quantizers.ste_sign: kq.ste_sign, lq.quantizers.approx_sign: kq.approx_sign,
        lq.quantizers.swish_sign: kq.swish_sign, lq.quantizers.ste_tern: kq.ste_tern,
        lq.quantizers.ste_heaviside: kq.ste_heaviside,
        lq.constraints.WeightClip: kbnn.constraints.WeightClip,
        lq.constraints.weight_clip: kbnn.constraints.WeightClip,
        lq.activations.hard_tanh: kbnn.activations.hard_tanh,
        lq.activations.leaky_tanh: kbnn.activations.leaky_tanh,
        lq.optimizers.CaseOptimizer: kbnn.optimizers.CaseOptimizer,
        lq.metrics.FlipRatio: kbnn.metrics.FlipRatio,
    }
    for mapped, expected in identical.items():
        assert mapped is expected
    # the layers and Bop return plain kbnn objects
    for name in ("QuantDense", "QuantConv1D", "QuantConv2D", "QuantDepthwiseConv2D",
                 "QuantSeparableConv2D"):
        args = (4,) if name in ("QuantDense",) else ((3,) if name == "QuantDepthwiseConv2D"
                                                    else (4, 3))
        layer = getattr(lq.layers, name)(*args)
        assert type(layer) is getattr(kbnn.layers, name), name
        assert isinstance(layer, getattr(lq.layers, name))
    bop = lq.optimizers.Bop(threshold=1e-6, gamma=1e-3)
    assert type(bop) is kbnn.optimizers.Bop and isinstance(bop, lq.optimizers.Bop)
    assert issubclass(lq.callbacks.HyperparameterScheduler, kbnn.optimizers.HyperparameterScheduler)
    assert keras.constraints.get("weight_clip").clip_value == 1.0


@pytest.mark.parametrize(("identifier", "cls"), [
    ("ste_sign", kq.SteSign), ("SteSign", kq.SteSign), ("approx_sign", kq.ApproxSign),
    ("swish_sign", kq.SwishSign), ("ste_heaviside", kq.SteHeaviside),
    ("magnitude_aware_sign", kq.MagnitudeAwareSign), ("ste_tern", kq.SteTern),
    ("dorefa_quantizer", kq.DoReFa), ("DoReFaQuantizer", kq.DoReFa), ("noop", kq.NoOp),
    ("NoOpQuantizer", kq.NoOp), (kq.ste_sign, kq.SteSign), (kq.approx_sign, kq.ApproxSign),
    (kq.ste_heaviside, kq.SteHeaviside), ("scaled_sign", kq.ScaledSign),
    ({"class_name": "DoReFaQuantizer", "config": {"k_bit": 3, "mode": "weights"}}, kq.DoReFa),
])
def test_quantizer_identifiers(identifier, cls):
    quantizer = lq.quantizers.get(identifier)
    assert type(quantizer) is cls
    layer = lq.layers.QuantConv2D(4, 3, kernel_quantizer=identifier)
    assert type(layer.kernel_quantizer) is cls
    if quantizer.applies_to != "weights":  # kbnn refuses weight quantizers on inputs
        layer = lq.layers.QuantConv2D(4, 3, input_quantizer=identifier)
        assert type(layer.input_quantizer) is cls
    assert lq.quantizers.get(None) is None
    restored = lq.quantizers.deserialize(lq.quantizers.serialize(quantizer))
    assert type(restored) is cls and restored.get_config() == quantizer.get_config()


def test_clip_value_none_is_the_unclipped_ste():
    x = tf.constant([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0])
    for quantizer in (lq.quantizers.SteSign(clip_value=None),
                      lq.quantizers.get({"class_name": "SteSign",
                                         "config": {"clip_value": None}})):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantizer(x)
        np.testing.assert_array_equal(y.numpy(), [-1, -1, -1, 1, 1, 1])
        np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones(6))
    layer = lq.layers.QuantDense(3, input_quantizer=lq.quantizers.SteSign(clip_value=None),
                                 kernel_quantizer="ste_sign")
    assert layer.input_quantizer.clip_value is None


@lq.utils.set_precision(1)
def my_sign(x):
    return tf.where(x < 0, -1.0, 1.0) * 1.0


def test_plain_functions_as_quantizers():
    layer = lq.layers.QuantDense(3, input_quantizer=my_sign, kernel_quantizer=lambda w: w * 2)
    assert isinstance(layer.input_quantizer, lq.quantizers.FunctionQuantizer)
    assert layer.input_quantizer.precision == 1  # from set_precision
    assert layer.kernel_quantizer.precision == 32
    assert layer.input_quantizer.binary_form(tf.zeros((1, 3))) is None  # no export form
    layer.build((None, 4))
    x = np.array([[0.5, -2.0, 0.0, 1.0]], np.float32)
    kernel = layer.kernel.numpy()
    np.testing.assert_allclose(layer(x).numpy(),
                               np.where(x < 0, -1, 1) @ (2 * kernel) + layer.bias.numpy(),
                               rtol=1e-6)
    config = lq.quantizers.FunctionQuantizer(my_sign).get_config()
    assert config["precision"] == 1


def test_bop_predicate_recognises_the_binary_weights_of_lq_layers():
    binary = lq.layers.QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    real = lq.layers.QuantDense(3, input_quantizer="ste_sign")
    plain = kbnn.layers.QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    # larq's Bop idiom: a kernel marked binary with NoOp(precision=1)
    marked = lq.layers.QuantDense(3, kernel_quantizer=lq.quantizers.NoOp(precision=1))
    for layer in (binary, real, plain, marked):
        layer.build((None, 4))
    predicate = lq.optimizers.Bop.is_binary_variable
    assert predicate(marked.kernel)
    assert predicate(binary.kernel)
    assert not predicate(binary.bias) and not predicate(real.kernel)
    assert not predicate(plain.kernel)  # not made through lq.layers: use binary_predicate(model)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        predicate))
    assert isinstance(restored, lq.LarqBinaryVariablePredicate)


def test_metrics_argument_is_refused():
    with pytest.raises(NotImplementedError, match="FlipRatio"):
        lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", metrics=["flip_ratio"])
    assert lq.layers.QuantConv2D(4, 3, metrics=None).filters == 4
    with pytest.raises(ValueError, match="metrics"):  # kbnn quantizers have no `metrics`
        lq.quantizers.SteSign(metrics=["flip_ratio"])


def test_math_conventions():
    x = tf.constant([-2.0, -0.0, 0.0, 0.5])
    np.testing.assert_array_equal(lq.math.sign(x).numpy(), [-1, 1, 1, 1])  # larq: sign(0) = 1
    # kbnn's heaviside(0) = 1 (sign(0) = +1, as SteHeaviside and LCE); larq's gives 0
    np.testing.assert_array_equal(lq.math.heaviside(x).numpy(), [0, 1, 1, 1])
    np.testing.assert_array_equal(kq.SteHeaviside()(x).numpy(), [0, 1, 1, 1])


def test_utils():
    assert lq.utils.memory_as_readable_str(8 * 1024) == "1.00 KiB"
    assert lq.utils.memory_as_readable_str(8 * 1000) == "1,000.00 B"
    assert lq.utils.memory_as_readable_str(8 * 3 * 1024**2) == "3.00 MiB"

    @lq.utils.register_alias("compat_test_sign")
    @lq.utils.register_keras_custom_object
    class CompatTestSign(kq.SteSign):
        pass

    assert type(lq.quantizers.get("compat_test_sign")) is CompatTestSign
    assert type(lq.layers.QuantDense(2, input_quantizer="compat_test_sign").input_quantizer) \
        is CompatTestSign

    class Holder:
        value = 1

    with lq.utils.patch_object(Holder, "value", 2):
        assert Holder.value == 2
    assert Holder.value == 1


def test_summary_and_scheduler(capsys):
    model = keras.Sequential([keras.Input((4,)), lq.layers.QuantDense(
        3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")])
    lines = []
    lq.models.summary(model, print_fn=lines.append, include_macs=False)
    assert any("BOPs" in line for line in lines)
    bop = lq.optimizers.Bop(threshold=1e-6, gamma=1e-3)
    optimizer = lq.optimizers.CaseOptimizer((lq.optimizers.Bop.is_binary_variable, bop),
                                            default_optimizer=keras.optimizers.Adam(0.01))
    model.compile(optimizer, loss="mse")
    scheduler = lq.callbacks.HyperparameterScheduler(lambda epoch: 1e-3 / (epoch + 1), "gamma",
                                                     bop, log_name="bop_gamma")
    history = model.fit(np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32), epochs=2,
                        verbose=0, callbacks=[scheduler])
    np.testing.assert_allclose(history.history["bop_gamma"], [1e-3, 5e-4], rtol=1e-6)
    assert list(optimizer.routing().values()).count(bop.name) == 1
