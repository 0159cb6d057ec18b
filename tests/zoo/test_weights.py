"""kbnn.zoo.weights: registry, download cache (KBNN_HOME), hash checks, network errors,
share-page entries and format dispatch. Downloads come from file:// URLs and from an HTTP server
on 127.0.0.1 started by the tests."""

import functools
import hashlib
import http.server
import pathlib
import re
import socket
import threading

import keras
import numpy as np
import pytest

from kbnn.zoo import torch_checkpoint as tc
from kbnn.zoo import weights as zw

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ARCH = "kbnn_test_arch"


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="d2")(x))


def same_weights(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private registry copy, KBNN_HOME in tmp, and no proxy for 127.0.0.1."""
    monkeypatch.setattr(zw, "_REGISTRY", dict(zw._REGISTRY))
    monkeypatch.setenv("KBNN_HOME", str(tmp_path / "kbnn_home"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def weights_file(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    path = served / "small.weights.h5"
    small_model(seed=1).save_weights(path)
    return path


@pytest.fixture
def http_server(weights_file):
    """Serves weights_file's folder on 127.0.0.1; counts GET requests per path."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(weights_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kbnn_home(monkeypatch, tmp_path):
    assert zw.kbnn_home() == str(tmp_path / "kbnn_home")
    monkeypatch.delenv("KBNN_HOME")
    assert zw.kbnn_home() == str(pathlib.Path("~/.kbnn").expanduser())


def test_none_keeps_initial_weights():
    model = small_model()
    before = model.get_weights()
    assert zw.load_weights(model, None, architecture=ARCH) is None
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_local_keras_files(weights_file, tmp_path):
    source = small_model(seed=1)
    for path in (weights_file, tmp_path / "full.keras"):
        if path.suffix == ".keras":
            source.save(path)
        model = small_model()
        assert zw.load_weights(model, str(path), architecture=ARCH) == str(path)
        assert same_weights(model, source)


def test_registered_url_downloads_once_into_kbnn_home(http_server, weights_file, tmp_path):
    base, requests = http_server
    zw.register_weights(zw.WeightsEntry(
        name="imagenet", architecture=ARCH, url=f"{base}/small.weights.h5",
        sha256=sha256(weights_file), top1=12.3, top1_source="test"))
    model = small_model()
    path = zw.load_weights(model, "imagenet", architecture=ARCH)
    assert pathlib.Path(path) == tmp_path / "kbnn_home" / "weights" / "small.weights.h5"
    assert same_weights(model, small_model(seed=1))
    assert requests == ["/small.weights.h5"]
    # Cached: the second call does not download again.
    assert zw.load_weights(small_model(), "imagenet", architecture=ARCH) == path
    assert requests == ["/small.weights.h5"]


def test_notop_name_is_chosen_without_top(http_server, weights_file):
    base, _ = http_server
    for name in ("imagenet", "imagenet_notop"):
        zw.register_weights(zw.WeightsEntry(
            name=name, architecture=ARCH, url=f"{base}/small.weights.h5",
            file_name=f"{name}.weights.h5", sha256=sha256(weights_file)))
    path, entry = zw.resolve_weights("imagenet", architecture=ARCH, include_top=False)
    assert entry.name == "imagenet_notop" and path.endswith("imagenet_notop.weights.h5")
    # load_weights infers include_top from a "predictions" layer (the builders' classifier).
    assert zw.load_weights(small_model(), "imagenet", architecture=ARCH).endswith(
        "imagenet_notop.weights.h5")
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="d1")(inputs))
    with_top = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(x))
    assert zw.load_weights(with_top, "imagenet", architecture=ARCH).endswith(
        "/imagenet.weights.h5")


def test_plain_http_and_file_urls(http_server, weights_file):
    base, _ = http_server
    for url in (f"{base}/small.weights.h5", weights_file.as_uri()):
        model = small_model()
        zw.load_weights(model, url, architecture=ARCH, sha256=sha256(weights_file))
        assert same_weights(model, small_model(seed=1))


def test_hash_mismatch_deletes_the_file_and_names_both_hashes(http_server, weights_file,
                                                              tmp_path):
    base, _ = http_server
    wrong = "0" * 64
    url = f"{base}/small.weights.h5"
    zw.register_weights(zw.WeightsEntry(name="bad", architecture=ARCH, url=url, sha256=wrong))
    with pytest.raises(zw.WeightsHashError) as info:
        zw.load_weights(small_model(), "bad", architecture=ARCH)
    message = str(info.value)
    assert wrong in message and sha256(weights_file) in message and url in message
    assert not (tmp_path / "kbnn_home" / "weights" / "small.weights.h5").exists()


def test_unreachable_url_names_url_and_cache_path(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/missing.weights.h5"
    with pytest.raises(zw.WeightsDownloadError) as info:
        zw.load_weights(small_model(), url, architecture=ARCH)
    message = str(info.value)
    assert url in message
    assert str(tmp_path / "kbnn_home" / "weights" / "missing.weights.h5") in message


def test_share_page_entry_says_where_and_how():
    page = "https://example.invalid/share/abc"
    zw.register_weights(zw.WeightsEntry(name="imagenet", architecture=ARCH, page_url=page,
                                        file_name="model_best.pth.tar", format="torch"))
    with pytest.raises(zw.WeightsUnavailableError) as info:
        zw.load_weights(small_model(), "imagenet", architecture=ARCH)
    message = str(info.value)
    assert page in message and "model_best.pth.tar" in message
    assert "weights='path/to/model_best.pth.tar'" in message


def test_share_page_entry_uses_a_copy_in_the_cache(tmp_path):
    zw.register_weights(zw.WeightsEntry(name="imagenet", architecture=ARCH,
                                        page_url="https://example.invalid/p",
                                        file_name="nested_model.pt", format="torch"))
    cached = tmp_path / "kbnn_home" / "weights" / "nested_model.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((FIXTURES / "nested_model.pt").read_bytes())
    assert zw.resolve_weights("imagenet", architecture=ARCH)[0] == str(cached)


def test_unknown_name_lists_registered_names():
    zw.register_weights(zw.WeightsEntry(name="imagenet", architecture=ARCH,
                                        page_url="https://example.invalid/p"))
    with pytest.raises(ValueError, match=re.escape(
            f"Unknown weights 'cifar' for architecture '{ARCH}'. Registered: ['imagenet']")):
        zw.load_weights(small_model(), "cifar", architecture=ARCH)
    with pytest.raises(FileNotFoundError, match="does_not_exist.h5"):
        zw.load_weights(small_model(), "does_not_exist.h5", architecture=ARCH)


def test_torch_checkpoint_dispatch():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))

    def mapping(m):
        return tc.TorchMapping({"w": (m.get_layer("fc").kernel, tc.linear_kernel),
                                "b": m.get_layer("fc").bias})

    with pytest.raises(ValueError, match="No PyTorch checkpoint mapping"):
        zw.load_weights(model, str(FIXTURES / "nested_model.pt"), architecture=ARCH)
    zw.load_weights(model, FIXTURES / "nested_model.pt", architecture=ARCH, mapping=mapping)
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), np.ones((2, 2)))


def test_entry_validation():
    with pytest.raises(ValueError, match="needs its `sha256`"):
        zw.WeightsEntry(name="a", architecture=ARCH, url="https://x/y.h5")
    with pytest.raises(ValueError, match="exactly one of `url`, `file` and `page_url`"):
        zw.WeightsEntry(name="a", architecture=ARCH)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        zw.WeightsEntry(name="a", architecture=ARCH, url="https://x/y.h5", sha256="abc")
    entry = zw.WeightsEntry(name="a", architecture=ARCH, page_url="https://x/p")
    zw.register_weights(entry)
    with pytest.raises(ValueError, match="already registered"):
        zw.register_weights(zw.WeightsEntry(name="a", architecture=ARCH, page_url="https://x/q"))


def test_builtin_registry():
    entries = zw.list_weights()
    larq = [e for e in entries if e.format == "larq_zoo"]
    assert len(larq) == 28 and all(
        e.url.startswith("https://github.com/larq/zoo/releases/download/") for e in larq)
    assert all(e.sha256 and e.top1 for e in larq)
    quicknet = zw.get_weights_entry("QuickNet", "imagenet")
    assert quicknet.url.endswith("/quicknet-v1.0/quicknet_weights.h5") and quicknet.top1 == 63.3
    shared = [e for e in entries if e.page_url]
    assert {e.architecture for e in shared} >= {"ReActNetA", "ReActNetResNet18", "BNextTiny"}
    assert all(e.url is None and e.top1 for e in shared)
    assert [e.name for e in zw.list_weights("QuickNet")] == ["imagenet", "imagenet_notop"]
