"""Read PyTorch checkpoints without PyTorch and without running pickled code, and map them onto
Keras models.

`read_torch_checkpoint(path)` returns the checkpoint's state dict as ``{key: numpy array}``. It
reads both formats `torch.save` writes:

* the zip format (PyTorch >= 1.6): ``<prefix>/data.pkl`` (the pickled object, whose tensors
  refer to storages by key), ``<prefix>/data/<key>`` (raw storage bytes) and
  ``<prefix>/byteorder`` ("little" or "big"; little when absent);
* the legacy format (``_use_new_zipfile_serialization=False`` and PyTorch < 1.6): a magic
  number, a protocol version and a system-info dict, the pickled object, the list of storage
  keys, then each storage as an int64 element count followed by its bytes.

The pickle is read by `_RestrictedUnpickler`, whose `find_class` resolves only the names that
rebuilding tensors and plain containers needs (`torch._utils._rebuild_tensor*`, the storage
classes, dtype names, `collections.OrderedDict`, `builtins.set`/`frozenset`, `torch.Size`) to
kbnn's own stand-ins; every other global raises `UnsafeCheckpointError` naming it, before
anything is called. Tensors become numpy arrays built from the storage bytes with their offset,
sizes and strides (bounds-checked), in native byte order; bfloat16 becomes float32.

`load_torch_checkpoint(model, checkpoint, mapping)` assigns the tensors to Keras variables through
a `TorchMapping` (checkpoint key -> variable and transform), strictly by default.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "TorchLoadReport",
    "TorchMapping",
    "UnsafeCheckpointError",
    "adabin_resnet18_mapping",
    "batch_norm_targets",
    "binary_kernel",
    "compose",
    "conv_kernel",
    "conv_targets",
    "dense_targets",
    "depthwise_kernel",
    "get_torch_mapping",
    "identity",
    "learnable_bias",
    "linear_kernel",
    "load_torch_checkpoint",
    "negate",
    "per_channel",
    "reactnet_a_mapping",
    "reactnet_resnet18_mapping",
    "read_torch_checkpoint",
    "read_torch_object",
    "register_torch_mapping",
    "scalar",
]

# Keys under which training scripts nest the state dict, tried in this order.
STATE_DICT_KEYS = ("state_dict", "model", "net", "model_state_dict")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle asks for a global kbnn does not resolve (it would run code)."""


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint kbnn can read, or its content is inconsistent."""


# ---------------------------------------------------------------------------------------------
# Stand-ins for the few torch objects a state dict pickle refers to.

# Legacy typed storage classes: name -> (numpy dtype name, element size in bytes).
_STORAGE_TYPES = {
    "DoubleStorage": ("float64", 8),
    "FloatStorage": ("float32", 4),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
    "UntypedStorage": ("uint8", 1),
}

# torch dtype names (as `torch.<name>` globals, used by _rebuild_tensor_v3) -> numpy dtype name.
_DTYPES = {
    "float64": "float64", "double": "float64",
    "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> str:
        return _STORAGE_TYPES[self.name][0]


@dataclasses.dataclass(frozen=True)
class _DType:
    name: str


class _Storage:
    """One storage: its raw bytes (filled from the zip record or the legacy stream)."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int):
        self.key = key
        self.dtype = storage_type.dtype
        self.itemsize = _STORAGE_TYPES[storage_type.name][1]
        self.numel = int(numel)
        self.raw: bytes | None = None
        self.offset_bytes = 0  # legacy storage views: offset into the root storage
        self.root: _Storage | None = None  # legacy storage views: the storage they view
        self.little_endian = True
        self._decoded: dict[str, np.ndarray] = {}

    def as_array(self, dtype: str) -> np.ndarray:
        """The storage's bytes as a 1-D native-order array of `dtype` (bfloat16 -> float32)."""
        if dtype in self._decoded:
            return self._decoded[dtype]
        if self.raw is None:
            raise CheckpointFormatError(f"storage {self.key!r} has no data in the checkpoint")
        raw = memoryview(self.raw)[self.offset_bytes:]
        order = "<" if self.little_endian else ">"
        if dtype == "bfloat16":
            n = len(raw) // 2
            bits = np.frombuffer(raw[: 2 * n], dtype=order + "u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype == "bool":
            arr = np.frombuffer(raw, dtype=np.uint8) != 0
        else:
            np_dtype = np.dtype(dtype)
            n = len(raw) // np_dtype.itemsize
            arr = np.frombuffer(raw[: n * np_dtype.itemsize], dtype=np_dtype.newbyteorder(order))
            arr = arr.astype(np_dtype.newbyteorder("="), copy=False)
        self._decoded[dtype] = arr
        return arr


class _TensorRef:
    """A tensor whose storage bytes may arrive after the pickle (legacy format)."""

    def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
        if not isinstance(storage, _Storage):
            raise CheckpointFormatError(
                f"a tensor in the checkpoint is built from {type(storage).__name__}, not from a "
                "storage")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        self.dtype = dtype or storage.dtype
        self.metadata = metadata or {}
        if len(self.size) != len(self.stride):
            raise CheckpointFormatError(
                f"tensor with size {self.size} has stride {self.stride} of another rank")

    def materialize(self) -> np.ndarray:
        base = self.storage.as_array(self.dtype)
        shape = self.size
        if any(s == 0 for s in shape):
            return np.zeros(shape, dtype=base.dtype)
        if self.offset < 0 or any(st < 0 for st in self.stride) or any(s < 0 for s in shape):
            raise CheckpointFormatError(
                f"tensor with offset {self.offset}, size {shape}, stride {self.stride} is invalid")
        last = self.offset + sum((s - 1) * st for s, st in zip(shape, self.stride))
        if last >= base.size:
            raise CheckpointFormatError(
                f"tensor with offset {self.offset}, size {shape} and stride {self.stride} reads "
                f"element {last} of a storage of {base.size} elements")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=shape,
            strides=tuple(st * base.itemsize for st in self.stride), writeable=False)
        out = np.array(view, copy=True, order="C")
        if self.metadata.get("neg"):
            out = -out
        return out


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise CheckpointFormatError(f"a tensor in the checkpoint has dtype {dtype!r}")
    return _TensorRef(storage, storage_offset, size, stride, dtype=_DTYPES[dtype.name],
                      metadata=metadata)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


def _size(values=()):
    return tuple(values)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "Size"): _size,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_TYPES})
_ALLOWED_GLOBALS.update({("torch", name): _DType(name) for name in _DTYPES})


def _refusal(what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"checkpoint asks for {what}, which kbnn refuses to run. kbnn reads tensors and plain "
        "containers (dict, list, tuple, OrderedDict, numbers, strings) only and never runs "
        "pickled code. If you trust the file, load it with PyTorch and save the state dict "
        "alone: torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pth').")


class _RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals are kbnn's stand-ins; anything else is refused."""

    def __init__(self, file, storage_factory: Callable[[tuple], Any] | None):
        super().__init__(file, encoding="utf-8")
        self._storage_factory = storage_factory

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            # Protocol-2 pickles name Python 3's builtins module "__builtin__".
            shown = "builtins" if module == "__builtin__" else module
            raise _refusal(f"{shown}.{name}") from None

    def persistent_load(self, pid):
        if self._storage_factory is None or not isinstance(pid, tuple) or not pid:
            raise _refusal(f"persistent object {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise _refusal(f"a pickled torch.nn.Module class ({getattr(pid[1], 'name', pid[1])})")
        if kind != "storage":
            raise _refusal(f"persistent object of kind {kind!r}")
        return self._storage_factory(pid[1:])


def _storage_args(args: tuple) -> tuple[_StorageType, str, int]:
    storage_type, key, _location, numel = args[:4]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"storage {key!r} has type {storage_type!r}")
    return storage_type, str(key), int(numel)


# ---------------------------------------------------------------------------------------------
# The two file formats.


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                raise CheckpointFormatError(
                    f"{path} is a TorchScript archive (torch.jit.save), not a torch.save "
                    "checkpoint; kbnn reads torch.save files only")
            raise CheckpointFormatError(f"{path} is a zip file without a <name>/data.pkl record; "
                                        "it is not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointFormatError(f"{path}: unknown byteorder record {order!r}")
            little = order == "little"
        storages: dict[str, _Storage] = {}

        def storage(args):
            storage_type, key, numel = _storage_args(args)
            if key not in storages:
                record = f"{prefix}data/{key}"
                try:
                    raw = archive.read(record)
                except KeyError:
                    raise CheckpointFormatError(f"{path}: storage record {record} is missing") \
                        from None
                st = _Storage(key, storage_type, numel)
                st.raw = raw
                st.little_endian = little
                storages[key] = st
            return storages[key]

        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storage).load()
    return _materialize(obj)


def _read_legacy(path: str, stream) -> Any:
    def plain():
        return _RestrictedUnpickler(stream, None).load()

    if plain() != _LEGACY_MAGIC:
        raise CheckpointFormatError(f"{path} is a pickle but not a PyTorch checkpoint "
                                    "(no magic number)")
    protocol = plain()
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{path}: legacy checkpoint protocol {protocol!r} is not "
                                    f"supported (expected {_LEGACY_PROTOCOL})")
    sys_info = plain()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}

    def storage(args):
        storage_type, key, numel = _storage_args(args)
        view = args[4] if len(args) > 4 else None
        if key not in storages:
            storages[key] = _Storage(key, storage_type, numel)
            storages[key].little_endian = little
        root = storages[key]
        if view is None:
            return root
        view_key, offset, _view_size = view
        view_key = str(view_key)
        if view_key not in storages:
            st = _Storage(view_key, storage_type, _view_size)
            st.little_endian = little
            st.offset_bytes = int(offset) * st.itemsize
            st.root = root
            storages[view_key] = st
        return storages[view_key]

    obj = _RestrictedUnpickler(stream, storage).load()
    keys = plain()
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"{path}: legacy checkpoint without a storage key list")
    count_format = "<q" if little else ">q"
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise CheckpointFormatError(f"{path}: storage {key!r} is listed but never used")
        head = stream.read(8)
        if len(head) != 8:
            raise CheckpointFormatError(f"{path}: legacy checkpoint ends before storage {key!r}")
        (count,) = struct.unpack(count_format, head)
        nbytes = count * st.itemsize
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointFormatError(f"{path}: legacy checkpoint ends inside storage {key!r}")
        st.raw = raw
    for st in storages.values():
        if st.root is not None:
            st.raw = st.root.raw
    return _materialize(obj)


def _materialize(obj, memo=None):
    """Replace every `_TensorRef` in nested dicts/lists/tuples/sets by its numpy array."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _TensorRef):
        out = obj.materialize()
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v, memo)
    elif isinstance(obj, list):
        out = [_materialize(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_materialize(v, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_materialize(v, memo) for v in obj)
    elif isinstance(obj, (_Storage, _StorageType, _DType)):
        raise CheckpointFormatError(
            "the checkpoint holds a bare storage or dtype object; kbnn reads tensors only")
    else:
        out = obj
    memo[id(obj)] = out
    return out


def read_torch_object(path) -> Any:
    """The object a `torch.save` file holds, with every tensor as a numpy array.

    No PyTorch is imported and no pickled code is run: globals other than those needed for
    tensors and plain containers raise `UnsafeCheckpointError` (naming the global) before
    anything is called.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnsafeCheckpointError: the pickle asks for any other global.
        CheckpointFormatError: not a PyTorch checkpoint, a TorchScript archive, a pre-0.4 tar
            checkpoint, or inconsistent content.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as stream:
        head = stream.read(2)
        stream.seek(0)
        if len(head) == 2 and head[0] == 0x80:
            return _read_legacy(path, stream)
    if tarfile.is_tarfile(path):
        raise CheckpointFormatError(
            f"{path} is a tar checkpoint of PyTorch < 0.4, which kbnn does not read; load and "
            "re-save it with a recent PyTorch (torch.save writes the zip format)")
    raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint (neither the zip format "
                                "nor the legacy pickle format of torch.save)")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def read_torch_checkpoint(path, *, key: str | None = None) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch checkpoint as ``{name: numpy array}``, without PyTorch.

    The state dict is the saved object itself when it maps names to tensors; otherwise it is
    looked up under `key` (dotted for deeper nesting, e.g. ``"model.ema"``) or, when `key` is
    None, under the first of "state_dict", "model", "net", "model_state_dict" that holds one.
    A ``module.`` prefix on every key (``nn.DataParallel``) is removed. Float16/32/64 and integer
    tensors keep their dtype, bool stays bool, bfloat16 becomes float32; non-contiguous tensors
    are copied into C order; big-endian checkpoints are converted to native order.

    Raises:
        UnsafeCheckpointError: the pickle asks for a global other than tensors/containers.
        CheckpointFormatError: no state dict found (the message lists the keys seen), or the
            file is not a readable PyTorch checkpoint.
    """
    obj = read_torch_object(path)
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                seen = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise CheckpointFormatError(
                    f"{path}: no entry {part!r} (of key={key!r}); found {seen}")
            obj = obj[part]
    else:
        seen_levels = []
        while not _is_state_dict(obj) and isinstance(obj, dict):
            seen_levels.append(sorted(map(str, obj)))
            nested = [k for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict)]
            if not nested:
                break
            obj = obj[nested[0]]
        if not _is_state_dict(obj):
            raise CheckpointFormatError(
                f"{path} holds no state dict (a dict of tensors) at the top level or under "
                f"{', '.join(STATE_DICT_KEYS)}; keys seen: {seen_levels or type(obj).__name__}. "
                "Pass key='...' to name where it is.")
    if not _is_state_dict(obj):
        raise CheckpointFormatError(f"{path}: the entry {key!r} is not a dict of tensors")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------------------------------------
# Transforms from PyTorch layouts to Keras layouts.


def identity(w: np.ndarray) -> np.ndarray:
    """Unchanged (biases, BatchNorm gamma/beta/running stats, PReLU slopes of shape (C,))."""
    return w


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """Convolution kernel OIHW (PyTorch) -> HWIO (Keras); OIW -> WIO for 1-D convolutions."""
    if w.ndim == 4:
        return np.transpose(w, (2, 3, 1, 0))
    if w.ndim == 3:
        return np.transpose(w, (2, 1, 0))
    raise ValueError(f"conv_kernel expects a 3-D or 4-D kernel. Received shape {w.shape}.")


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """`nn.Linear` weight (out, in) -> Keras Dense kernel (in, out)."""
    if w.ndim != 2:
        raise ValueError(f"linear_kernel expects a 2-D weight. Received shape {w.shape}.")
    return w.T


def per_channel(w: np.ndarray) -> np.ndarray:
    """A per-channel parameter of any shape with one non-unit axis, e.g. (1, C, 1, 1) -> (C,)."""
    return np.reshape(w, (-1,))


learnable_bias = per_channel  # ReActNet/BNext `LearnableBias` (1, C, 1, 1) -> (C,)


def scalar(w: np.ndarray) -> np.ndarray:
    """A one-value parameter of shape () or (1,) (AdaBin's ``alpha_a``/``beta_a``) -> shape ()."""
    if w.size != 1:
        raise ValueError(f"scalar expects a tensor of one value. Received shape {w.shape}.")
    return np.reshape(w, ())


def negate(w: np.ndarray) -> np.ndarray:
    """-w (e.g. ReActNet's RPReLU shift written as a LearnableBias of -gamma)."""
    return -w


def compose(*transforms: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The transforms applied left to right."""

    def composed(w):
        for fn in transforms:
            w = fn(w)
        return w

    return composed


def binary_kernel(shape_oihw) -> Callable[[np.ndarray], np.ndarray]:
    """A flattened binary-conv weight (ReActNet's ``HardBinaryConv``: (O*I*H*W, 1)) reshaped to
    `shape_oihw`, then OIHW -> HWIO."""
    shape = tuple(int(s) for s in shape_oihw)

    def transform(w):
        if w.size != int(np.prod(shape)):
            raise ValueError(f"binary_kernel: a weight of {w.size} values cannot be reshaped to "
                             f"{shape}")
        return conv_kernel(np.reshape(w, shape))

    return transform


def depthwise_kernel(depth_multiplier: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """Depthwise conv weight (C*m, 1, H, W) (PyTorch, groups=C) -> Keras (H, W, C, m)."""
    m = int(depth_multiplier)

    def transform(w):
        if w.ndim != 4 or w.shape[1] != 1 or w.shape[0] % m:
            raise ValueError(f"depthwise_kernel expects (C*{m}, 1, H, W). Received {w.shape}.")
        c = w.shape[0] // m
        return np.transpose(np.reshape(w, (c, m) + w.shape[2:]), (2, 3, 0, 1))

    return transform


# ---------------------------------------------------------------------------------------------
# Mapping a state dict onto a Keras model.


@dataclasses.dataclass(frozen=True)
class TorchMapping:
    """Which checkpoint tensor fills which Keras variable.

    Args:
        targets: ``{checkpoint key: (variable, transform)}`` (or just the variable, for the
            identity transform). The transform turns the PyTorch array into the variable's shape.
        unused: fnmatch patterns of checkpoint keys known to have no Keras counterpart (e.g.
            ``"*.num_batches_tracked"``, which is always ignored).
        kept: model variables known to have no checkpoint counterpart, left at their values
            and not reported as unfilled (e.g. `AdaBinWeight`'s backward-only EDE constants
            ``k``, ``t``, which the official AdaBin code keeps out of its state dict).
    """

    targets: Mapping[str, Any]
    unused: tuple[str, ...] = ()
    kept: tuple[Any, ...] = ()

    def __post_init__(self):
        normalized = {}
        for key, target in dict(self.targets).items():
            if isinstance(target, tuple):
                variable, transform = target
            else:
                variable, transform = target, identity
            normalized[str(key)] = (variable, transform or identity)
        object.__setattr__(self, "targets", normalized)
        object.__setattr__(self, "unused", tuple(self.unused) + ("*num_batches_tracked",))
        object.__setattr__(self, "kept", tuple(self.kept))

    def is_unused(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.unused)

    def __or__(self, other: TorchMapping) -> TorchMapping:
        overlap = set(self.targets) & set(other.targets)
        if overlap:
            raise ValueError(f"TorchMapping: keys mapped twice: {sorted(overlap)}")
        return TorchMapping({**self.targets, **other.targets}, self.unused + other.unused,
                            self.kept + other.kept)


@dataclasses.dataclass(frozen=True)
class TorchLoadReport:
    """What `load_torch_checkpoint` did: keys assigned, and (non-strict) what was left."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]
    unfilled: tuple[str, ...]


def _variable_name(variable) -> str:
    return getattr(variable, "path", None) or getattr(variable, "name", repr(variable))


def batch_norm_targets(prefix: str, layer) -> dict[str, Any]:
    """``{prefix.weight, .bias, .running_mean, .running_var}`` -> a Keras BatchNormalization's
    gamma, beta, moving_mean, moving_variance (gamma/beta only where the layer has them).
    PyTorch's default epsilon is 1e-5: build the Keras layer with ``epsilon=1e-5``."""
    out = {f"{prefix}.running_mean": layer.moving_mean,
           f"{prefix}.running_var": layer.moving_variance}
    if getattr(layer, "gamma", None) is not None:
        out[f"{prefix}.weight"] = layer.gamma
    if getattr(layer, "beta", None) is not None:
        out[f"{prefix}.bias"] = layer.beta
    return out


def conv_targets(prefix: str, layer, transform=conv_kernel) -> dict[str, Any]:
    """``{prefix.weight: (kernel, transform), prefix.bias: bias}`` of a Keras convolution."""
    out = {f"{prefix}.weight": (layer.kernel, transform)}
    if getattr(layer, "bias", None) is not None:
        out[f"{prefix}.bias"] = layer.bias
    return out


def dense_targets(prefix: str, layer) -> dict[str, Any]:
    """``{prefix.weight: (kernel, linear_kernel), prefix.bias: bias}`` of a Keras Dense."""
    return conv_targets(prefix, layer, transform=linear_kernel)


def _shape(x) -> tuple:
    return tuple(int(d) for d in x.shape)


def load_torch_checkpoint(model, checkpoint, mapping, *, strict: bool = True,
                          key: str | None = None) -> TorchLoadReport:
    """Assign a PyTorch state dict to `model`'s variables through `mapping`.

    Args:
        model: a built Keras model (or layer).
        checkpoint: a path to a `torch.save` file (read with `read_torch_checkpoint`) or a
            state dict ``{name: array}`` already read.
        mapping: a `TorchMapping`, a dict accepted by `TorchMapping`, or a callable
            ``mapping(model)`` returning either (how model builders provide it).
        strict: when True (default), every variable of `model` must be filled (except
            `mapping.kept`) and every checkpoint tensor used (except `mapping.unused`
            patterns); otherwise the leftovers are only reported.
        key: where the state dict is nested, passed to `read_torch_checkpoint`.

    Nothing is assigned unless every check passes. Returns a `TorchLoadReport`.

    Raises:
        ValueError: names every checkpoint key the mapping expects but the file lacks, every
            unused checkpoint tensor and every unfilled model variable (strict), and every shape
            mismatch (checkpoint key, PyTorch shape, transformed shape, variable and its shape).
    """
    state = (read_torch_checkpoint(checkpoint, key=key)
             if not isinstance(checkpoint, Mapping) else dict(checkpoint))
    if callable(mapping) and not isinstance(mapping, (TorchMapping, Mapping)):
        mapping = mapping(model)
    if not isinstance(mapping, TorchMapping):
        mapping = TorchMapping(mapping)

    problems = []
    seen_vars: dict[int, str] = {}
    assignments = []
    missing = tuple(k for k in mapping.targets if k not in state)
    for ckpt_key, (variable, transform) in mapping.targets.items():
        if id(variable) in seen_vars:
            problems.append(f"variable {_variable_name(variable)} is the target of both "
                            f"{seen_vars[id(variable)]!r} and {ckpt_key!r}")
            continue
        seen_vars[id(variable)] = ckpt_key
        if ckpt_key not in state:
            continue
        raw = np.asarray(state[ckpt_key])
        try:
            value = np.asarray(transform(raw))
        except ValueError as err:
            problems.append(f"{ckpt_key!r}: {err}")
            continue
        if _shape(value) != _shape(variable):
            problems.append(
                f"shape mismatch for {ckpt_key!r}: checkpoint {raw.shape}"
                + (f" (transformed to {value.shape})" if value.shape != raw.shape else "")
                + f" vs variable {_variable_name(variable)} {_shape(variable)}")
            continue
        assignments.append((ckpt_key, variable, value))
    unused = tuple(k for k in state if k not in mapping.targets and not mapping.is_unused(k))
    weights = list(getattr(model, "weights", []))
    kept = {id(v) for v in mapping.kept}
    unfilled = tuple(_variable_name(v) for v in weights
                     if id(v) not in seen_vars and id(v) not in kept)
    if missing:
        problems.append(f"missing in the checkpoint ({len(missing)}): {list(missing)}")
    if strict and unused:
        problems.append(f"unused checkpoint tensors ({len(unused)}): {list(unused)}")
    if strict and unfilled:
        problems.append(f"model weights not filled ({len(unfilled)}): {list(unfilled)}")
    if problems:
        name = checkpoint if not isinstance(checkpoint, Mapping) else "the state dict"
        raise ValueError(f"Cannot load {name} into {getattr(model, 'name', 'the model')}:\n  "
                         + "\n  ".join(problems))
    for _, variable, value in assignments:
        variable.assign(value.astype(np.dtype(getattr(variable, "dtype", value.dtype))))
    return TorchLoadReport(loaded=tuple(k for k, _, _ in assignments), missing=missing,
                           unused=unused, unfilled=unfilled)


# Mappings of published PyTorch checkpoints, by architecture (registered by the model builders).
_TORCH_MAPPINGS: dict[str, Callable[[Any], Any]] = {}


def register_torch_mapping(architecture: str, mapping: Callable[[Any], Any], *,
                           overwrite: bool = False) -> None:
    """Register ``mapping(model) -> TorchMapping`` for PyTorch checkpoints of `architecture`
    (used by `kbnn.zoo.load_weights` when it is given a .pth/.pt/.pth.tar file)."""
    if not callable(mapping):
        raise TypeError(f"register_torch_mapping: `mapping` must be callable(model). "
                        f"Received mapping={mapping!r}.")
    if architecture in _TORCH_MAPPINGS and not overwrite:
        raise ValueError(f"A PyTorch mapping for architecture={architecture!r} is already "
                         "registered; pass overwrite=True to replace it.")
    _TORCH_MAPPINGS[architecture] = mapping


def get_torch_mapping(architecture: str) -> Callable[[Any], Any]:
    """The registered ``mapping(model)`` for `architecture`; ValueError listing the known ones."""
    try:
        return _TORCH_MAPPINGS[architecture]
    except KeyError:
        raise ValueError(
            f"No PyTorch checkpoint mapping is registered for architecture={architecture!r}. "
            f"Known: {sorted(_TORCH_MAPPINGS) or 'none'}. Pass mapping=... to load_weights or "
            "use kbnn.zoo.load_torch_checkpoint(model, path, mapping).") from None


# ---------------------------------------------------------------------------------------------
# Mappings of the published checkpoints onto the kbnn.zoo builders (layer names of those
# builders; registered below for their architecture names).


def _quantizer_variable(conv, quantizer: str, variable: str, default: str, maps_onto: str):
    """``conv.<quantizer>.<variable>`` (e.g. an RSign threshold) that a checkpoint tensor maps
    onto; else a ValueError: `maps_onto` (what the tensor maps onto, ending where the quantizer's
    type follows), the type, and the `default` quantizer to build the model with."""
    value = getattr(getattr(conv, quantizer, None), variable, None)
    if value is None:
        raise ValueError(
            f"{maps_onto}{type(getattr(conv, quantizer, None)).__name__}; build the model with "
            f"{quantizer}={default!r} (the default) to load it.")
    return value


def _threshold_of(conv, where: str):
    return _quantizer_variable(
        conv, "input_quantizer", "threshold", "rsign",
        f"The official checkpoint's {where} (a LearnableBias before the sign) maps onto the "
        f"RSign threshold of {conv.name}, whose input quantizer is ")


def _rprelu_targets(move_a: str, prelu: str, move_b: str, layer) -> dict[str, Any]:
    """Official ``move_a -> PReLU -> move_b`` = kbnn RPReLU(gamma=-move_a, beta=slope,
    zeta=move_b)."""
    return {f"{move_a}.bias": (layer.gamma, compose(per_channel, negate)),
            f"{prelu}.weight": (layer.beta, per_channel),
            f"{move_b}.bias": (layer.zeta, per_channel)}


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _resnet_blocks(model):
    """``(stage, block, layer)`` of the ResNet-family builders' "stage{s}_block{b}" layers, in
    order (both 1-based)."""
    stage = 1
    while _has_layer(model, f"stage{stage}_block1"):
        block = 1
        while _has_layer(model, f"stage{stage}_block{block}"):
            yield stage, block, model.get_layer(f"stage{stage}_block{block}")
            block += 1
        stage += 1


def _resnet_stem_targets(model) -> dict[str, Any]:
    """The official ResNet stem ``conv1`` / ``bn1`` -> "stem_conv" / "stem_bn"."""
    return {**conv_targets("conv1", model.get_layer("stem_conv")),
            **batch_norm_targets("bn1", model.get_layer("stem_bn"))}


def _shortcut_targets(prefix: str, block) -> dict[str, Any]:
    """``prefix.downsample.1`` / ``.2`` (AvgPool -> 1x1 conv -> BN) -> the block's
    `AvgPoolShortcut` conv and BN (none where the block has no shortcut)."""
    if block.shortcut is None:
        return {}
    return {**conv_targets(f"{prefix}.downsample.1", block.shortcut.conv),
            **batch_norm_targets(f"{prefix}.downsample.2", block.shortcut.bn)}


def _oihw(kernel) -> tuple[int, int, int, int]:
    """The PyTorch (out, in, kh, kw) shape of a Keras (kh, kw, in, out) kernel."""
    return (int(kernel.shape[3]), int(kernel.shape[2]), int(kernel.shape[0]),
            int(kernel.shape[1]))


def _with_classifier(model, targets: dict[str, Any], unused=(), kept=()) -> TorchMapping:
    """`targets` plus ``fc`` -> "predictions" when the model has its top; without it ``fc`` is
    listed as unused."""
    if _has_layer(model, "predictions"):
        return TorchMapping({**targets, **dense_targets("fc", model.get_layer("predictions"))},
                            unused=tuple(unused), kept=tuple(kept))
    return TorchMapping(targets, unused=tuple(unused) + ("fc.weight", "fc.bias"),
                        kept=tuple(kept))


def reactnet_a_mapping(model) -> TorchMapping:
    """The official ReActNet-A checkpoint (liuzechun/ReActNet, ``mobilenet/2_step2/reactnet.py``:
    ``feature.0`` stem, ``feature.1..13`` BasicBlocks, ``fc``) onto `kbnn.zoo.ReActNetA`
    (any width, with the default RSign/ScaledSign quantizers; without the top the checkpoint's
    ``fc`` is left out)."""
    targets: dict[str, Any] = {
        **conv_targets("feature.0.conv1", model.get_layer("stem_conv")),
        **batch_norm_targets("feature.0.bn1", model.get_layer("stem_bn")),
    }
    i = 1
    while _has_layer(model, f"block{i}"):
        block, p = model.get_layer(f"block{i}"), f"feature.{i}"
        c = int(block.conv3x3.kernel.shape[2])
        targets[f"{p}.move11.bias"] = (_threshold_of(block.conv3x3, f"{p}.move11"),
                                       compose(per_channel, negate))
        targets[f"{p}.binary_3x3.weights"] = (block.conv3x3.kernel, binary_kernel((c, c, 3, 3)))
        targets.update(batch_norm_targets(f"{p}.bn1", block.bn3x3))
        targets.update(_rprelu_targets(f"{p}.move12", f"{p}.prelu1", f"{p}.move13",
                                       block.rprelu1))
        if len(block.convs1x1) == 1:
            conv = block.convs1x1[0]
            targets[f"{p}.move21.bias"] = (_threshold_of(conv, f"{p}.move21"),
                                           compose(per_channel, negate))
            targets[f"{p}.binary_pw.weights"] = (conv.kernel, binary_kernel((c, c, 1, 1)))
            targets.update(batch_norm_targets(f"{p}.bn2", block.bns1x1[0]))
        else:
            if block.move is None:
                raise ValueError(f"{block.name} has no LearnableBias for {p}.move21; build the "
                                 "model with input_quantizer='rsign' (the default) to load it.")
            targets[f"{p}.move21.bias"] = (block.move.bias, per_channel)
            for k, (conv, bn) in enumerate(zip(block.convs1x1, block.bns1x1), start=1):
                targets[f"{p}.binary_pw_down{k}.weights"] = (conv.kernel,
                                                             binary_kernel((c, c, 1, 1)))
                targets.update(batch_norm_targets(f"{p}.bn2_{k}", bn))
        targets.update(_rprelu_targets(f"{p}.move22", f"{p}.prelu2", f"{p}.move23",
                                       block.rprelu2))
        i += 1
    return _with_classifier(model, targets)


register_torch_mapping("ReActNetA", reactnet_a_mapping)


def _binary_weight(shape_oihw) -> Callable[[np.ndarray], np.ndarray]:
    """A binary-conv weight stored either as OIHW or flattened (O*I*H*W, 1) -> HWIO."""
    flat = binary_kernel(shape_oihw)
    return lambda w: conv_kernel(w) if w.ndim == 4 else flat(w)


def reactnet_resnet18_mapping(model) -> TorchMapping:
    """The official ReActNet ResNet-18 checkpoint (liuzechun/ReActNet,
    ``resnet/2_step2/birealnet.py``: ``conv1``/``bn1`` stem, ``layer{1..4}.{0..3}`` BasicBlocks
    with ``move0``, ``binary_conv``, ``bn1``, ``downsample.1``/``.2`` (1x1 conv, BN),
    ``move1``, ``prelu``, ``move2``; ``fc``) onto `kbnn.zoo.ReActNetResNet18`."""
    targets = _resnet_stem_targets(model)
    for stage, index, block in _resnet_blocks(model):
        p = f"layer{stage}.{index - 1}"
        kernel = block.conv.kernel
        targets[f"{p}.move0.bias"] = (_threshold_of(block.conv, f"{p}.move0"),
                                      compose(per_channel, negate))
        targets[f"{p}.binary_conv.weight"] = (kernel, _binary_weight(_oihw(kernel)))
        targets.update(batch_norm_targets(f"{p}.bn1", block.bn))
        targets.update(_shortcut_targets(p, block))
        targets.update(_rprelu_targets(f"{p}.move1", f"{p}.prelu", f"{p}.move2",
                                       model.get_layer(f"stage{stage}_block{index}_rprelu")))
    return _with_classifier(model, targets)


register_torch_mapping("ReActNetResNet18", reactnet_resnet18_mapping)


def bireal_mapping(model) -> TorchMapping:
    """The official Bi-Real Net 18/34 checkpoint (liuzechun/Bi-Real-net,
    ``pytorch_implementation/BiReal18_34/birealnet.py``: ``conv1``/``bn1`` stem,
    ``layer{1..4}.{i}`` BasicBlocks with ``binary_conv.weights`` (HardBinaryConv, stored
    flattened (O*I*3*3, 1); forward sign(W) times the per-output-channel mean |W|), ``bn1``,
    ``downsample.1``/``.2`` (1x1 conv, BN); ``fc``) onto `kbnn.zoo.BiRealNet18` /
    `BiRealNet34` with their default quantizers (ApproxSign inputs: sign forward;
    magnitude-aware kernels: the same mean-|W|-scaled sign forward)."""
    targets = _resnet_stem_targets(model)
    for stage, index, block in _resnet_blocks(model):
        p = f"layer{stage}.{index - 1}"
        kernel = block.conv.kernel
        targets[f"{p}.binary_conv.weights"] = (kernel, _binary_weight(_oihw(kernel)))
        targets.update(batch_norm_targets(f"{p}.bn1", block.bn))
        targets.update(_shortcut_targets(p, block))
    return _with_classifier(model, targets)


register_torch_mapping("BiRealNet18", bireal_mapping)
register_torch_mapping("BiRealNet34", bireal_mapping)


def _maxout_targets(prefix: str, layer) -> dict[str, Any]:
    """AdaBin's ``Maxout`` (``pos_scale``, ``neg_scale``, shape (C,)) -> `kbnn.layers.Maxout`
    gamma_plus, gamma_minus."""
    return {f"{prefix}.pos_scale": (layer.gamma_plus, per_channel),
            f"{prefix}.neg_scale": (layer.gamma_minus, per_channel)}


def _adabin_activation(block, where: str):
    """The block's `AdaBinActivation` when the block computes what the official
    ``AdaBin_Conv2d`` computes, else a ValueError saying which builder options to pass."""
    from kbnn import quantizers as kq

    conv = block.conv
    activation = getattr(conv, "input_quantizer", None)
    problems = []
    if not isinstance(activation, kq.AdaBinActivation):
        problems.append(f"input quantizer {type(activation).__name__}")
    elif activation.form != "code":
        problems.append(f"activation_form={activation.form!r}")
    if not isinstance(getattr(conv, "kernel_quantizer", None), kq.AdaBinWeight):
        problems.append(f"kernel quantizer {type(conv.kernel_quantizer).__name__}")
    if float(block.pad_values) != 0.0:
        problems.append(f"pad_values={block.pad_values!r}")
    if problems:
        raise ValueError(
            f"{block.name} ({', '.join(problems)}) does not fit the official AdaBin "
            f"checkpoint's {where}: build the model with activation_form='code' (on the "
            "command line, kbnn zoo import ... --option activation_form=code) and "
            "pad_values=0.0 and the default quantizers 'adabin_activation', 'adabin_weight', "
            "e.g. kbnn.zoo.AdaBinResNet18(weights='model_best.pth.tar', "
            "activation_form='code'). (The official "
            "AdaBin_Conv2d computes activations alpha_a * (sign((x - beta_a) / alpha_a) + "
            "beta_a), zero-pads the binarized input and binarizes weights as "
            "std * sign(W - mean) + mean.)")
    return activation


# AdaBin's ResNet creates these and its forward never uses them (see adabin_resnet18_mapping).
ADABIN_UNUSED = ("nonlinear2.pos_scale", "nonlinear2.neg_scale", "bn3.weight", "bn3.bias",
                 "bn3.running_mean", "bn3.running_var")


def adabin_resnet18_mapping(model) -> TorchMapping:
    """The official AdaBin ResNet-18 checkpoint (huawei-noah/Efficient-Computing,
    ``BinaryNetworks/AdaBin/imagenet/nets/resnet18.py`` and ``utils/binarylib.py``) onto
    `kbnn.zoo.AdaBinResNet18` built with ``activation_form="code"`` and ``pad_values=0.0``
    (any width; a ValueError names the options otherwise). Official names:

    * ``conv1``, ``bn1``, ``nonlinear1`` (a ``Maxout``: ``pos_scale``, ``neg_scale``): the
      stem -> "stem_conv", "stem_bn", "stem_maxout";
    * ``layer{s}.{j}.conv{k}`` (``AdaBin_Conv2d``: ``weight`` OIHW, ``binary_a.alpha_a`` and
      ``binary_a.beta_a`` scalars), ``.bn{k}``, ``.nonlinear{k}`` (k = 1, 2) ->
      "stage{s}_block{2j+k}" ``.conv`` (kernel, input quantizer alpha / beta), ``.bn``,
      ``.maxout``; ``layer{s}.0.downsample.1`` / ``.2`` (1x1 conv, BN after the 2x2
      average pool) -> "stage{s}_block1" ``.shortcut.conv`` / ``.shortcut.bn``;
    * ``bn2`` (BatchNorm1d on the pooled features) and ``fc`` -> "head_bn" and
      "predictions" (left out without the top).

    ``nonlinear2`` (a Maxout on the pooled features) and ``bn3`` (a BatchNorm1d after ``fc``)
    are created by the official module but never called in its forward pass: listed as unused
    (`ADABIN_UNUSED`). The ``k``/``t`` constants of the weight sign's backward pass are not
    in the state dict (plain tensor attributes, which the official ``main.py`` anneals per
    epoch): the kernel quantizers' ``k``/``t`` keep their values (`TorchMapping.kept`); they
    do not change the forward pass."""
    targets: dict[str, Any] = {**_resnet_stem_targets(model),
                               **_maxout_targets("nonlinear1", model.get_layer("stem_maxout"))}
    kept: list = []
    for stage, index, block in _resnet_blocks(model):
        j, k = divmod(index - 1, 2)
        p, conv = f"layer{stage}.{j}", f"layer{stage}.{j}.conv{k + 1}"
        activation = _adabin_activation(block, conv)
        kept.extend((block.conv.kernel_quantizer.k, block.conv.kernel_quantizer.t))
        targets[f"{conv}.weight"] = (block.conv.kernel, conv_kernel)
        targets[f"{conv}.binary_a.alpha_a"] = (activation.alpha, scalar)
        targets[f"{conv}.binary_a.beta_a"] = (activation.beta, scalar)
        targets.update(batch_norm_targets(f"{p}.bn{k + 1}", block.bn))
        targets.update(_maxout_targets(f"{p}.nonlinear{k + 1}", block.maxout))
        if block.shortcut is not None and k:
            raise ValueError(f"{block.name} has a shortcut conv, which the official layout has "
                             "only in the first block of a stage (layer{s}.0.downsample).")
        targets.update(_shortcut_targets(p, block))
    unused = ADABIN_UNUSED
    if _has_layer(model, "predictions"):
        targets.update(batch_norm_targets("bn2", model.get_layer("head_bn")))
    else:
        unused += ("bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var")
    return _with_classifier(model, targets, unused=unused, kept=kept)


register_torch_mapping("AdaBinResNet18", adabin_resnet18_mapping)
