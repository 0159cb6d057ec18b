"""kbnn.zoo.larq_weights: Keras 2 HDF5 weight files in larq-zoo's layout (written here with h5py
as tf.keras' `save_weights_to_hdf5_group` writes them) loaded into kbnn models."""

import hashlib
import re

import h5py
import keras
import numpy as np
import pytest

from kbnn.layers import QuantConv2D, QuantDense
from kbnn.zoo import larq_weights as lw
from kbnn.zoo import weights as zw


def write_keras2_h5(path, layers, *, chunks=1, model_group=False):
    """tf.keras layout: root attr `layer_names` (all layers, model order; split in `chunks`
    attributes layer_names0.. when asked), one group per layer (created in name order) with attr
    `weight_names` ("<layer>/<var>:0") and a dataset per weight at <layer>/<weight name>."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_group else f
        names = [name.encode("utf8") for name, _ in layers]
        if chunks == 1:
            root.attrs["layer_names"] = names
        else:
            for i, part in enumerate(np.array_split(np.array(names), chunks)):
                root.attrs[f"layer_names{i}"] = list(part)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.15.0"
        for name, weights in sorted(layers, key=lambda item: item[0]):
            g = root.create_group(name)
            weight_names = [f"{name}/{var}:0" for var, _ in weights]
            g.attrs["weight_names"] = [w.encode("utf8") for w in weight_names]
            for weight_name, (_, value) in zip(weight_names, weights):
                g.create_dataset(weight_name, data=value)


def kbnn_model(width=8):
    """A QuickNet-like kbnn model: float stem, frozen depthwise, binary conv + BN residual,
    binary dense head."""
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, trainable=False,
                                     name="blur")(x)
    x = keras.layers.BatchNormalization(center=False, scale=False, name="blur_bn")(x)
    y = QuantConv2D(width, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="bconv")(x)
    y = keras.layers.BatchNormalization(name="bconv_bn")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = QuantDense(5, name="head")(x)
    return keras.Model(inputs, outputs, name="kbnn_quick")


def larq_layers(rng, width=8):
    """The same network as larq-zoo would have saved it (larq's layer names)."""
    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def bn(prefix, center=True, scale=True):
        return [*([("gamma", r(width))] if scale else []),
                *([("beta", r(width))] if center else []),
                ("moving_mean", r(width)), ("moving_variance", np.abs(r(width)) + 0.5)]

    return [
        ("input_1", []),
        ("conv2d", [("kernel", r(3, 3, 3, width))]),
        ("batch_normalization", bn("bn")),
        ("depthwise_conv2d", [("depthwise_kernel", r(3, 3, width, 1))]),
        ("batch_normalization_1", bn("bn1", center=False, scale=False)),
        ("quant_conv2d", [("kernel", r(3, 3, width, width))]),
        ("batch_normalization_2", bn("bn2")),
        ("tf.__operators__.add", []),
        ("global_average_pooling2d", []),
        ("quant_dense", [("kernel", r(width, 5)), ("bias", r(5))]),
    ]


def flat(layers):
    return [value for _, weights in layers for _, value in weights]


def model_values(model):
    return [v.numpy() for layer in model.layers
            for v in list(layer.trainable_weights) + list(layer.non_trainable_weights)]


@pytest.mark.parametrize("chunks, model_group", [(1, False), (3, False), (1, True)])
def test_load_by_layer_order(tmp_path, chunks, model_group):
    layers = larq_layers(np.random.default_rng(0))
    path = tmp_path / "quick_weights.h5"
    write_keras2_h5(path, layers, chunks=chunks, model_group=model_group)
    model = kbnn_model()
    pairs = lw.load_larq_zoo_weights(model, path)
    assert pairs[0] == ("conv2d", "stem") and pairs[-1] == ("quant_dense", "head")
    for got, want in zip(model_values(model), flat(layers)):
        np.testing.assert_array_equal(got, want)


def test_load_by_name(tmp_path):
    model = kbnn_model()
    names = {"conv2d": "stem", "batch_normalization": "stem_bn", "depthwise_conv2d": "blur",
             "batch_normalization_1": "blur_bn", "quant_conv2d": "bconv",
             "batch_normalization_2": "bconv_bn", "quant_dense": "head"}
    layers = [(names.get(n, n), w) for n, w in larq_layers(np.random.default_rng(1))]
    layers = layers[::-1]  # order no longer matters
    write_keras2_h5(tmp_path / "w.h5", layers)
    lw.load_larq_zoo_weights(model, tmp_path / "w.h5", match="name")
    np.testing.assert_array_equal(model.get_layer("head").bias.numpy(), dict(layers)["head"][1][1])


def test_shape_mismatch_names_layers_and_shapes(tmp_path):
    write_keras2_h5(tmp_path / "w.h5", larq_layers(np.random.default_rng(0), width=8))
    model = kbnn_model(width=16)
    before = model_values(model)
    with pytest.raises(ValueError, match=re.escape(
            "file layer 'conv2d' weight 'conv2d/kernel:0' has shape (3, 3, 3, 8), model layer "
            "'stem' variable 'stem/kernel' has shape (3, 3, 3, 16)")):
        lw.load_larq_zoo_weights(model, tmp_path / "w.h5")
    for got, want in zip(model_values(model), before):  # nothing assigned
        np.testing.assert_array_equal(got, want)


def test_layer_count_mismatch(tmp_path):
    write_keras2_h5(tmp_path / "w.h5", larq_layers(np.random.default_rng(0))[:-1])
    with pytest.raises(ValueError, match=r"the file has 6 layers with weights, the model 7\. "
                                         r"Unpaired file layers: \[\]; unpaired model layers: "
                                         r"\['head'\]"):
        lw.load_larq_zoo_weights(kbnn_model(), tmp_path / "w.h5")


def test_nested_layers_are_flattened_in_order(tmp_path):
    @keras.saving.register_keras_serializable(package="kbnn_tests")
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 1, use_bias=False)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(self.conv(x))

    inputs = keras.Input((4, 4, 4))
    model = keras.Model(inputs, Block()(keras.layers.Conv2D(4, 1)(inputs)))
    rng = np.random.default_rng(3)
    layers = [("conv2d", [("kernel", rng.random((1, 1, 4, 4))), ("bias", rng.random(4))]),
              ("conv2d_1", [("kernel", rng.random((1, 1, 4, 4)))]),
              ("batch_normalization", [(n, rng.random(4)) for n in
                                       ("gamma", "beta", "moving_mean", "moving_variance")])]
    write_keras2_h5(tmp_path / "w.h5", layers)
    lw.load_larq_zoo_weights(model, tmp_path / "w.h5")
    np.testing.assert_allclose(model.weights[-1].numpy(), layers[2][1][3][1])


def test_load_weights_dispatches_h5_files(tmp_path, monkeypatch):
    monkeypatch.setattr(zw, "_REGISTRY", dict(zw._REGISTRY))
    monkeypatch.setenv("KBNN_HOME", str(tmp_path / "home"))
    layers = larq_layers(np.random.default_rng(0))
    path = tmp_path / "quick_weights.h5"
    write_keras2_h5(path, layers)
    model = kbnn_model()
    zw.load_weights(model, str(path), architecture="kbnn_quick")
    np.testing.assert_array_equal(model.get_layer("stem").kernel.numpy(), layers[1][1][0][1])
    # A registered larq-zoo entry (file:// URL, sha256) downloads into the cache and loads.
    zw.register_weights(zw.WeightsEntry(
        name="imagenet", architecture="kbnn_quick", url=path.as_uri(), format="larq_zoo",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    model = kbnn_model()
    loaded = zw.load_weights(model, "imagenet", architecture="kbnn_quick")
    assert loaded.startswith(str(tmp_path / "home" / "weights"))
    np.testing.assert_array_equal(model.get_layer("head").bias.numpy(), layers[-1][1][1][1])
    # A Keras 3 .weights.h5 file is not mistaken for a larq-zoo file.
    model.save_weights(tmp_path / "k3.weights.h5")
    assert zw.weights_format(str(tmp_path / "k3.weights.h5")) == "keras"
    (tmp_path / "k3.h5").write_bytes((tmp_path / "k3.weights.h5").read_bytes())
    assert zw.weights_format(str(tmp_path / "k3.h5")) == "keras"
    assert zw.weights_format(str(path)) == "larq_zoo"


def test_not_a_keras2_file(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_group("layers")
    with pytest.raises(ValueError, match="not a Keras 2 HDF5 weights file"):
        lw.load_larq_zoo_weights(kbnn_model(), tmp_path / "x.h5")


def test_quicknet_builder_loads_a_larq_zoo_file(tmp_path):
    """kbnn.zoo.QuickNet's weighted layers come in larq-zoo's order: a file written in larq's
    layout (larq's layer names) from one QuickNet loads into another through `weights=`."""
    from kbnn import zoo

    kwargs = {"width_multiplier": 0.25, "input_shape": (32, 32, 3), "classes": 10}
    source = zoo.QuickNet(**kwargs)
    rng = np.random.default_rng(5)
    for v in source.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    layers, counts = [], {}
    for name, variables in lw._weighted_layers(source):
        kind = type(source.get_layer(name)).__name__
        larq_kind = {"Conv2D": "quant_conv2d", "QuantConv2D": "quant_conv2d",
                     "DepthwiseConv2D": "depthwise_conv2d", "Dense": "quant_dense"}.get(
            kind, "batch_normalization")
        index = counts.get(larq_kind, 0)
        counts[larq_kind] = index + 1
        larq_name = larq_kind if index == 0 else f"{larq_kind}_{index}"
        layers.append((larq_name, [(v.path.rsplit("/", 1)[-1], v.numpy()) for v in variables]))
    path = tmp_path / "quicknet_weights.h5"
    write_keras2_h5(path, [("input_1", [])] + layers)
    model = zoo.QuickNet(weights=str(path), **kwargs)
    for got, want in zip(model.weights, source.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
