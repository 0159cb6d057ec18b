"""Pretrained weights for the kbnn.zoo builders: a registry of weight entries, a download cache,
and one `load_weights` that accepts every way of naming weights.

``weights`` (the builders' argument, as in keras.applications) is one of:

* ``None``: keep the initial values;
* a local path: ``.keras`` / ``.weights.h5`` (Keras 3, `model.load_weights`), a larq-zoo
  ``.h5`` file (Keras 2 HDF5 layout, `kbnn.zoo.load_larq_zoo_weights`) or a PyTorch checkpoint
  ``.pth`` / ``.pth.tar`` / ``.pt`` (`kbnn.zoo.load_torch_checkpoint`, torch-free, no pickled
  code run);
* a URL (``http://``, ``https://``, ``file://``): downloaded once into the cache;
* a registered name such as ``"imagenet"`` (see `list_weights`).

Downloads go through `keras.utils.get_file` (Keras' progress bar) into
``$KBNN_HOME/weights`` (``KBNN_HOME`` defaults to ``~/.kbnn``) and are checked against the
entry's sha256: a mismatch deletes the file and raises `WeightsHashError` naming both hashes.
Entries published only behind share pages (SharePoint, Google Drive, ownCloud) have no direct
URL: asking for them raises `WeightsUnavailableError` saying where to download the file and how to
pass it (``weights="path/to/file"``), unless the file is already in the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import urllib.parse
import zipfile
from typing import Any

__all__ = [
    "WeightsDownloadError",
    "WeightsEntry",
    "WeightsHashError",
    "WeightsUnavailableError",
    "get_weights_entry",
    "kbnn_home",
    "list_weights",
    "load_weights",
    "register_weights",
    "resolve_weights",
    "weights_format",
]

_URL_SCHEMES = ("http", "https", "file")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsHashError(ValueError):
    """A downloaded (or cached) weights file does not have the expected sha256."""


class WeightsDownloadError(OSError):
    """A weights file could not be downloaded (no network, HTTP error, bad URL)."""


class WeightsUnavailableError(FileNotFoundError):
    """Registered weights kbnn cannot fetch itself (share page only); the message says how."""


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights for one architecture.

    Args:
        name: the name passed as ``weights=`` (e.g. "imagenet", "imagenet_notop").
        architecture: the builder it fits (e.g. "quicknet", "reactnet_a").
        url: direct download URL (http/https/file), with `sha256`.
        file: a file shipped inside the kbnn.zoo package (path relative to the package).
        sha256: hex sha256 of the file (required with `url`).
        page_url: for files published only behind a share page: the page to download from.
        file_name: name of the file (cache name; for share pages, the name offered there, when
            known).
        dataset: what the weights were trained on.
        top1: top-1 accuracy in percent, as published.
        top1_source: where that top-1 was measured / published.
        include_top: True for weights with the classifier, False for feature-extractor weights.
        format: "keras" (.keras/.weights.h5), "larq_zoo" (Keras 2 HDF5) or "torch"; None:
            detected from the file.
        source: where the entry's facts come from.
        notes: anything else a user should know (layout of a checkpoint, preprocessing, ...).
    """

    name: str
    architecture: str
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    page_url: str | None = None
    file_name: str | None = None
    dataset: str = "ImageNet-1k (ILSVRC 2012)"
    top1: float | None = None
    top1_source: str = ""
    include_top: bool | None = True
    format: str | None = None
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        for argument in ("name", "architecture"):
            value = getattr(self, argument)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Invalid value for argument `{argument}`. Expected a non-empty "
                                 f"string. Received {argument}={value!r}.")
        where = [a for a in ("url", "file", "page_url") if getattr(self, a)]
        if len(where) != 1:
            raise ValueError(
                "A WeightsEntry needs exactly one of `url`, `file` and `page_url`. Received "
                f"url={self.url!r}, file={self.file!r}, page_url={self.page_url!r}.")
        if self.url is not None:
            scheme = urllib.parse.urlsplit(self.url).scheme
            if scheme not in _URL_SCHEMES:
                raise ValueError(f"Invalid value for argument `url`. Expected an http, https or "
                                 f"file URL. Received url={self.url!r}.")
            if self.sha256 is None:
                raise ValueError(f"A WeightsEntry with a `url` needs its `sha256`. Received "
                                 f"url={self.url!r}, sha256=None.")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"Invalid value for argument `sha256`. Expected 64 lowercase hex "
                             f"digits. Received sha256={self.sha256!r}.")
        if self.format not in (None, "keras", "larq_zoo", "torch"):
            raise ValueError(f"Invalid value for argument `format`. Expected None, 'keras', "
                             f"'larq_zoo' or 'torch'. Received format={self.format!r}.")

    @property
    def cache_name(self) -> str | None:
        """The file name in the cache folder."""
        if self.file_name:
            return self.file_name
        if self.url:
            return os.path.basename(urllib.parse.urlsplit(self.url).path) or None
        return None


_REGISTRY: dict[tuple[str, str], WeightsEntry] = {}


def register_weights(entry: WeightsEntry, *, overwrite: bool = False) -> WeightsEntry:
    """Add `entry` to the registry (keyed by architecture and name) and return it."""
    if not isinstance(entry, WeightsEntry):
        raise TypeError(f"register_weights expects a WeightsEntry. Received {entry!r}.")
    key = (entry.architecture, entry.name)
    if key in _REGISTRY and not overwrite and _REGISTRY[key] != entry:
        raise ValueError(f"Weights {entry.name!r} for architecture {entry.architecture!r} are "
                         "already registered; pass overwrite=True to replace them.")
    _REGISTRY[key] = entry
    return entry


def list_weights(architecture: str | None = None) -> list[WeightsEntry]:
    """Registered entries (of one architecture, or all), sorted by architecture and name."""
    return [e for k, e in sorted(_REGISTRY.items())
            if architecture is None or e.architecture == architecture]


def get_weights_entry(architecture: str, name: str) -> WeightsEntry:
    """The entry registered as `name` for `architecture`.

    Raises:
        ValueError: unknown name; the message lists the names registered for the architecture.
    """
    try:
        return _REGISTRY[(architecture, name)]
    except KeyError:
        known = [e.name for e in list_weights(architecture)]
        raise ValueError(
            f"Unknown weights {name!r} for architecture {architecture!r}. Registered: "
            f"{known or 'none'}. `weights` may also be None, a local path or a URL.") from None


def kbnn_home() -> str:
    """The cache root: $KBNN_HOME, default ~/.kbnn."""
    return os.path.expanduser(os.environ.get("KBNN_HOME") or os.path.join("~", ".kbnn"))


def _cache_dir() -> str:
    return os.path.join(kbnn_home(), "weights")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, fname: str, sha256: str | None) -> str:
    import keras

    home = kbnn_home()
    # get_file falls back to /tmp/.keras when the cache root is not writable (or missing).
    os.makedirs(home, exist_ok=True)
    target = os.path.join(home, "weights", fname)
    try:
        return keras.utils.get_file(fname, url, file_hash=sha256, cache_dir=home,
                                    cache_subdir="weights")
    except ValueError as err:
        if sha256 is not None and os.path.exists(target):
            actual = _sha256(target)
            if actual != sha256:
                os.remove(target)
                raise WeightsHashError(
                    f"The file downloaded from {url} has sha256 {actual}, expected {sha256}. "
                    f"It was deleted from {target}; the file at the URL may have changed or "
                    "the download was corrupted.") from err
        raise
    except Exception as err:  # get_file raises a bare Exception for URL errors.
        raise WeightsDownloadError(
            f"Could not download weights from {url} into {target}: {err}. Check the network "
            f"connection, or download the file yourself, place it at {target} (or anywhere) "
            "and pass its path as weights=.") from err


def _package_file(relative: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), relative)


def _unavailable(entry: WeightsEntry) -> WeightsUnavailableError:
    file_desc = f"the file {entry.file_name}" if entry.file_name else "the checkpoint file"
    example = entry.file_name or "checkpoint.pth.tar"
    cached = (f" (or put it at {os.path.join(_cache_dir(), entry.file_name)})"
              if entry.file_name else "")
    return WeightsUnavailableError(
        f"The {entry.architecture} weights {entry.name!r} are published only on a share page "
        f"kbnn cannot download from. Open {entry.page_url} in a browser, download "
        f"{file_desc}, and pass its path: weights='path/to/{example}'{cached}."
        + (f" Source: {entry.source}." if entry.source else ""))


def _is_url(value: str) -> bool:
    return urllib.parse.urlsplit(value).scheme in _URL_SCHEMES and "://" in value


def resolve_weights(weights, *, architecture: str, include_top: bool = True,
                    sha256: str | None = None) -> tuple[str | None, WeightsEntry | None]:
    """The local file for `weights` (downloading it when needed) and its registry entry.

    Args:
        weights: None, a local path, a URL or a registered name (see the module docstring).
        architecture: the architecture whose registered names are looked up.
        include_top: with False, a registered name ``X`` resolves to ``X_notop`` when that is
            registered.
        sha256: expected hash for a plain URL (checked when given).

    Returns:
        ``(path, entry)``; ``(None, None)`` for ``weights=None``; entry is None for paths and
        URLs.
    """
    if weights is None:
        return None, None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise TypeError(f"Invalid value for argument `weights`. Expected None, a path, a URL or "
                        f"a registered name. Received weights={weights!r}.")
    if _is_url(weights):
        fname = os.path.basename(urllib.parse.urlsplit(weights).path)
        if not fname:
            raise ValueError(f"Cannot name the file of weights={weights!r}: the URL has no "
                             "file name.")
        return _download(weights, fname, sha256), None
    if os.path.exists(os.path.expanduser(weights)):
        return os.path.expanduser(weights), None
    name = weights
    if not include_top and (architecture, f"{name}_notop") in _REGISTRY:
        name = f"{name}_notop"
    if (architecture, name) not in _REGISTRY and (
            os.sep in weights or os.path.splitext(weights)[1]):
        raise FileNotFoundError(f"Weights file {weights} does not exist (and it is not a "
                                f"registered name for architecture {architecture!r}).")
    entry = get_weights_entry(architecture, name)
    if entry.file is not None:
        return _package_file(entry.file), entry
    if entry.url is not None:
        return _download(entry.url, entry.cache_name, entry.sha256), entry
    if entry.file_name:  # share page: use a copy placed in the cache by hand
        cached = os.path.join(_cache_dir(), entry.file_name)
        if os.path.exists(cached):
            if entry.sha256 is not None and _sha256(cached) != entry.sha256:
                raise WeightsHashError(f"{cached} has sha256 {_sha256(cached)}, expected "
                                       f"{entry.sha256} (from {entry.page_url}).")
            return cached, entry
    raise _unavailable(entry)


def weights_format(path: str) -> str:
    """"keras", "larq_zoo" or "torch", from the file name and, where ambiguous, its content."""
    lower = path.lower()
    if lower.endswith((".pth", ".pth.tar", ".pt", ".ckpt", ".bin")):
        return "torch"
    if lower.endswith((".keras", ".weights.h5", ".weights.json")):
        return "keras"
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        import h5py

        with h5py.File(path, "r") as h5:
            keras2 = any(a.startswith("layer_names") for a in h5.attrs) or (
                "model_weights" in h5)
        return "larq_zoo" if keras2 else "keras"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            torch_zip = any(n.endswith("/data.pkl") for n in z.namelist())
        return "torch" if torch_zip else "keras"
    if head[:1] == b"\x80":
        return "torch"
    raise ValueError(f"Cannot tell the format of weights file {path}: expected .keras, "
                     ".weights.h5, a larq-zoo .h5 or a PyTorch .pth/.pt/.pth.tar checkpoint.")


def load_weights(model, weights, *, architecture: str, include_top: bool | None = None,
                 mapping: Any = None, strict: bool = True, sha256: str | None = None):
    """Load `weights` (None, path, URL or registered name) into `model`.

    The file is dispatched by format: Keras files to `model.load_weights`, larq-zoo HDF5 files
    to `load_larq_zoo_weights`, PyTorch checkpoints to `load_torch_checkpoint` with `mapping`
    (default: the mapping registered for `architecture` with `register_torch_mapping`).

    `include_top` picks ``<name>_notop`` entries for models without the classifier (see
    `resolve_weights`); None (default) infers it from `model`: True when it has a layer named
    "predictions" (the keras.applications classifier, which every kbnn.zoo builder uses).

    Returns:
        The local path loaded, or None for ``weights=None``.

    Raises:
        ValueError: unknown registered name (lists the registered ones), or weights that do not
            fit the model.
        WeightsHashError, WeightsDownloadError, WeightsUnavailableError: see `resolve_weights`.
    """
    if include_top is None:
        include_top = any(layer.name == "predictions" for layer in getattr(model, "layers", []))
    path, entry = resolve_weights(weights, architecture=architecture, include_top=include_top,
                                  sha256=sha256)
    if path is None:
        return None
    fmt = (entry.format if entry is not None and entry.format else None) or weights_format(path)
    if fmt == "keras":
        model.load_weights(path)
    elif fmt == "larq_zoo":
        from kbnn.zoo.larq_weights import load_larq_zoo_weights

        load_larq_zoo_weights(model, path)
    else:
        from kbnn.zoo.torch_checkpoint import get_torch_mapping, load_torch_checkpoint

        if mapping is None:
            mapping = get_torch_mapping(architecture)
        load_torch_checkpoint(model, path, mapping, strict=strict)
    return path


# ---------------------------------------------------------------------------------------------
# The registry. Facts only (file names, URLs, hashes, published top-1), each with its source.

_LARQ = "https://github.com/larq/zoo/releases/download"
_LARQ_SRC = "larq/zoo repository, larq_zoo/{path} (download_pretrained_model call and docstring)"


def _larq(architecture, folder, file, sha256, top1, path, notop_folder=None, notop_sha256=None):
    notes = ("Keras 2 (tf.keras) HDF5 weights of larq-zoo's model; they load by weighted-layer "
             "order into a kbnn model with the same layers.")
    common = {"architecture": architecture, "format": "larq_zoo", "top1": top1,
              "top1_source": "larq-zoo docs (ImageNet validation set, larq-zoo's evaluation)",
              "source": _LARQ_SRC.format(path=path), "notes": notes}
    register_weights(WeightsEntry(name="imagenet", url=f"{_LARQ}/{folder}/{file}.h5",
                                  sha256=sha256, include_top=True, **common))
    if notop_sha256:
        register_weights(WeightsEntry(
            name="imagenet_notop", url=f"{_LARQ}/{notop_folder or folder}/{file}_notop.h5",
            sha256=notop_sha256, include_top=False, **common))


# larq-zoo 2.x's published files (folder, file name, sha256, top-1, source module): a data file
# shipped with the package, zoo/weights/larq_zoo.json.
def _register_larq_zoo() -> None:
    with open(os.path.join(os.path.dirname(__file__), "weights", "larq_zoo.json")) as f:
        for row in json.load(f)["models"]:
            _larq(row["architecture"], row["folder"], row["file"], row["sha256"], row["top1"],
                  row["source_path"], notop_folder=row.get("notop_folder"),
                  notop_sha256=row.get("notop_sha256"))


_register_larq_zoo()

# Official PyTorch checkpoints behind share pages (no direct URL, no published hash).
_REACTNET_NOTES = ("PyTorch checkpoint of the official training script (train.py): a dict with "
                   "'state_dict' (nn.DataParallel keys, 'module.' prefix), 'epoch', "
                   "'best_top1_acc', 'optimizer'. Trained with PyTorch 1.4 (legacy torch.save "
                   "format, read by kbnn too).")
register_weights(WeightsEntry(
    name="imagenet", architecture="ReActNetA", format="torch",
    page_url="https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
             "EW1FVkAKN5dJg1ns_CcMtQoBJAy1Yxx-b7lpaTFjTJIUKw?e=oyebWy",
    top1=69.5, top1_source="ReActNet README, Models table (released model; paper: 69.4%)",
    source="https://github.com/liuzechun/ReActNet (README, 'Model-ReAct-MobileNet')",
    notes=_REACTNET_NOTES))
register_weights(WeightsEntry(
    name="imagenet", architecture="ReActNetResNet18", format="torch",
    page_url="https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
             "EY9P7mxs-8BLkTlqMZif4s4BnNWcKbUnvqeA_CvN3c9q4w?e=IpUyF4",
    top1=65.9, top1_source="ReActNet README, Models table ('ReActNet (Bi-Real based)')",
    source="https://github.com/liuzechun/ReActNet (README, 'Model-ReAct-ResNet')",
    notes="ReActNet on the Bi-Real Net ResNet-18 structure. " + _REACTNET_NOTES))
register_weights(WeightsEntry(
    name="adambnn", architecture="ReActNetA", format="torch",
    page_url="https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
             "EXEsfAt42gNLqfzt09BMoTwBbYT6sxH5VkZ_9DmBWhJxXg?e=fd4f5v",
    top1=70.5, top1_source="AdamBNN README, Models table (ReActNet-A trained with AdamBNN's "
                           "recipe, Liu et al., ICML 2021)",
    source="https://github.com/liuzechun/AdamBNN (README, 'Model-ReAct-AdamBNN-Training')",
    notes="Same architecture and checkpoint layout as the ReActNet-A release."))
for _size, _page, _top1 in (("Tiny", "jKjwDk35vVRPQN0", 72.4), ("Small", "bHLM7lqfzm58kIW", 76.1),
                            ("Middle", "jU5m9v4ADsJKZsa", 78.3), ("Large", "zQHrlxiQ6XbjCbz", 80.6)):
    register_weights(WeightsEntry(
        name="imagenet", architecture=f"BNext{_size}", format="torch",
        page_url=f"https://owncloud.hpi.de/s/{_page}", top1=_top1,
        top1_source="BNext README, Pretrained Models table",
        source="https://github.com/hpi-xnor/BNext (README, section 2)",
        notes="PyTorch checkpoint of the official BNext code (src/bnext.py)."))

# Weights trained on scikit-learn's digits, shipped in zoo/weights/ (kbnn.zoo.digits).
from . import digits as _digits

_digits.register()
