"""Write the PyTorch checkpoint fixtures (tests/zoo/fixtures) of tests/zoo/test_torch_*.py and
test_weights.py. Run it with a Python that has torch (kbnn and its tests never import torch):

    /path/to/python-with-torch tests/zoo/make_torch_fixtures.py

Every checkpoint is written by `torch.save`; the expected values are computed by torch and saved
next to it as .npz (torch -> numpy). The ReActNet checkpoints (the official module names, at 1/32
of the published width) are committed gzipped, with the logits torch computes. The malicious
checkpoints carry a payload that would create the file named by $KBNN_PWNED_MARKER; this script
checks that `torch.load(weights_only=False)` does run it (so the fixture is live) in a temporary
folder. The fixtures stay under 400 KiB in all.
`make_torch_fixtures.py bnext` (`bireal`, `adabin`) writes only the BNext-T (Bi-Real-18,
AdaBin ResNet-18) fixture.
"""

from __future__ import annotations

import collections
import gzip
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent / "fixtures"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.detach().contiguous().numpy()


def save_expected(name: str, tensors: dict[str, torch.Tensor]) -> None:
    np.savez(HERE / f"{name}.npz", **{k: to_numpy(v) for k, v in tensors.items()})


def dtype_tensors() -> collections.OrderedDict:
    g = torch.Generator().manual_seed(0)
    return collections.OrderedDict(
        f32=torch.randn(3, 4, generator=g),
        f16=torch.randn(5, generator=g).half(),
        f64=torch.randn(2, 3, generator=g).double(),
        bf16=torch.randn(2, 2, generator=g).bfloat16(),
        i64=torch.arange(-3, 3, dtype=torch.int64),
        i32=torch.tensor([[1, -2], [3, -4]], dtype=torch.int32),
        u8=torch.tensor([0, 7, 255], dtype=torch.uint8),
        flags=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
    )


def view_tensors() -> dict:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "base": base,
        "transposed": base.t(),           # strides (1, 6), same storage
        "slice": base[1:3, ::2],          # offset 6, strides (6, 2)
        "column": base[:, 2],             # offset 2, stride 6
        "narrow": base.view(-1)[5:17].view(3, 4),  # offset 5
    }


class Evil:
    """Pickles as a call of `func(*args)`: what a hostile checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# Reference layers in the style of the official ReActNet/BNext code.
class LearnableBias(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x + self.bias.expand_as(x)


class HardBinaryConv(nn.Module):
    def __init__(self, cin, cout, k=3, padding=1):
        super().__init__()
        self.shape = (cout, cin, k, k)
        self.padding = padding
        self.weight = nn.Parameter(torch.randn(cout * cin * k * k, 1) * 0.1)

    def forward(self, x):
        w = self.weight.view(self.shape)
        scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
        return nn.functional.conv2d(torch.sign(x), scale * torch.sign(w), padding=self.padding)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.move = LearnableBias(8)
        self.binary_conv = HardBinaryConv(8, 8)
        self.bn2 = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.depthwise = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.move(self.bn1(self.conv1(x)))
        x = self.prelu(self.bn2(self.binary_conv(x)) + x)
        x = self.depthwise(x).mean(dim=(2, 3))
        return self.fc(x)


def tiny_model() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for bn in (net.bn1, net.bn2):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
    state = collections.OrderedDict(("module." + k, v) for k, v in net.state_dict().items())
    torch.save({"epoch": 3, "state_dict": state, "best_top1_acc": torch.tensor(12.5)},
               HERE / "tiny_model.pth.tar")
    np.savez(HERE / "tiny_model.npz", input_nhwc=x.permute(0, 2, 3, 1).numpy(),
             output=y.numpy())


class RABlock(nn.Module):
    """The official ReActNet-A BasicBlock (mobilenet/2_step2/reactnet.py), same module names."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.move11 = LearnableBias(inplanes)
        self.binary_3x3 = OfficialBinaryConv(inplanes, inplanes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.move12, self.prelu1, self.move13 = (
            LearnableBias(inplanes), nn.PReLU(inplanes), LearnableBias(inplanes))
        self.move21 = LearnableBias(inplanes)
        if inplanes == planes:
            self.binary_pw = OfficialBinaryConv(inplanes, planes, 1, 1, 0)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.binary_pw_down1 = OfficialBinaryConv(inplanes, inplanes, 1, 1, 0)
            self.binary_pw_down2 = OfficialBinaryConv(inplanes, inplanes, 1, 1, 0)
            self.bn2_1, self.bn2_2 = nn.BatchNorm2d(inplanes), nn.BatchNorm2d(inplanes)
        self.move22, self.prelu2, self.move23 = (
            LearnableBias(planes), nn.PReLU(planes), LearnableBias(planes))
        self.stride, self.inplanes, self.planes = stride, inplanes, planes
        self.pooling = nn.AvgPool2d(2, 2)

    def forward(self, x):
        out1 = self.bn1(self.binary_3x3(torch.sign(self.move11(x))))
        if self.stride == 2:
            x = self.pooling(x)
        out1 = self.move13(self.prelu1(self.move12(x + out1)))
        out2 = torch.sign(self.move21(out1))
        if self.inplanes == self.planes:
            out2 = self.bn2(self.binary_pw(out2)) + out1
        else:
            out2 = torch.cat([self.bn2_1(self.binary_pw_down1(out2)) + out1,
                              self.bn2_2(self.binary_pw_down2(out2)) + out1], dim=1)
        return self.move23(self.prelu2(self.move22(out2)))


# The official padding: padding=k // 2 on both sides (PyTorch), which kbnn.zoo reproduces
# (symmetric_padding=True binary convs, explicit pads before the real convs and the max-pool);
# TensorFlow's SAME padding would pad a stride-2 window on an even size 0 before and 1 after,
# shifting every window by one pixel, which these fixtures would show.
def conv2d(x, w, stride, padding):
    return nn.functional.conv2d(x, w, stride=stride, padding=padding)


class OfficialBinaryConv(nn.Module):
    """HardBinaryConv in eval mode: conv(x, sign(W)) * mean|W| per output channel; the weights
    are stored flattened as `weights` (O*I*k*k, 1)."""

    def __init__(self, cin, cout, k, stride, padding):
        super().__init__()
        self.shape, self.stride, self.padding = (cout, cin, k, k), stride, padding
        self.weights = nn.Parameter(torch.randn(cout * cin * k * k, 1))

    def forward(self, x):
        w = self.weights.view(self.shape)
        scale = w.abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1)
        return conv2d(x, torch.sign(w), self.stride, self.padding) * scale


def run_features(feature: nn.ModuleList, x):
    """The `feature` list of the official ReActNet-A and BNext modules on `x`: the stem's conv1
    -> bn1, then every block."""
    first = feature[0]
    x = first.bn1(first.conv1(x))
    for block in feature[1:]:
        x = block(x)
    return x


class ReActNetA(nn.Module):
    """The official `reactnet` module (feature.0 = firstconv3x3, feature.1..13, fc) at any
    width; stride 2 where the width changes except into block 1 (the official `!= 64`)."""

    def __init__(self, widths, classes):
        super().__init__()
        first = nn.Module()
        first.conv1 = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        first.bn1 = nn.BatchNorm2d(widths[0])
        self.feature = nn.ModuleList([first])
        for i in range(1, len(widths)):
            stride = 2 if widths[i] != widths[i - 1] and i != 1 else 1
            self.feature.append(RABlock(widths[i - 1], widths[i], stride))
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.fc(run_features(self.feature, x).mean(dim=(2, 3)))


def reactnet_a() -> None:
    """ReActNet-A at 1/32 of the published width (stem 1 channel ... 32), 10 classes, in PyTorch
    1.4's legacy format, as the official release."""
    torch.manual_seed(1)
    widths = [c // 32 for c in [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2]
    net = ReActNetA(widths, classes=10)
    randomize(net)
    save_release(net, "reactnet_a_w1_32", torch.randn(4, 3, 32, 32).half().float(), legacy=True)


class RRBlock(nn.Module):
    """The official ReActNet ResNet BasicBlock (resnet/2_step2/birealnet.py), same names; the
    binary weight is stored OIHW as `binary_conv.weight`."""

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.move0 = LearnableBias(inplanes)
        self.binary_conv = nn.Module()
        self.binary_conv.weight = nn.Parameter(torch.randn(planes, inplanes, 3, 3))
        self.bn1 = nn.BatchNorm2d(planes)
        self.move1, self.prelu, self.move2 = (
            LearnableBias(planes), nn.PReLU(planes), LearnableBias(planes))
        self.downsample, self.stride = downsample, stride

    def forward(self, x):
        w = self.binary_conv.weight
        scale = w.abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1)
        out = torch.sign(self.move0(x))
        out = conv2d(out, torch.sign(w), self.stride, 1) * scale
        out = self.bn1(out) + (x if self.downsample is None else self.downsample(x))
        return self.move2(self.prelu(self.move1(out)))


class ResNet18(nn.Module):
    """The ResNet-18 skeleton of the official ReActNet and Bi-Real Net code, same module names:
    stem conv1 -> bn1 -> maxpool, four stages of four `block`s (the first of a stage strided,
    with an AvgPool -> 1x1 conv -> BN downsample where the shape changes), average pool, fc."""

    block: type[nn.Module]

    def __init__(self, widths, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = widths[0]
        for stage, planes in enumerate(widths, start=1):
            stride = 1 if stage == 1 else 2
            blocks = []
            for b in range(4):
                downsample = None
                if b == 0 and (stride != 1 or inplanes != planes):
                    downsample = nn.Sequential(nn.AvgPool2d(2, stride),
                                               nn.Conv2d(inplanes, planes, 1, bias=False),
                                               nn.BatchNorm2d(planes))
                blocks.append(self.block(inplanes, planes, stride if b == 0 else 1, downsample))
                inplanes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(x.mean(dim=(2, 3)))


class ReActNetResNet18(ResNet18):
    block = RRBlock


def randomize(net):
    """Weights that exercise every mapping: biases, slopes, BN statistics; latent binary
    weights from a few magnitudes (so that the gzipped fixture stays small)."""
    levels = torch.tensor([0.25, 0.5, 1.0, 2.0])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "move" in name:
                p.normal_(0, 0.1)
            elif "prelu" in name:
                p.uniform_(0.05, 0.5)
            elif name.endswith((".weights", "binary_conv.weight")):
                p.copy_(levels[torch.randint(0, 4, p.shape)] * torch.sign(torch.randn(p.shape)))
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    net.eval()


def save_release(net, name, x, legacy):
    """Save as the official releases are: nn.DataParallel keys under 'state_dict', plus epoch /
    best_top1_acc / optimizer entries; gzipped for the repository."""
    with torch.no_grad():
        y = net(x)
    state = collections.OrderedDict(("module." + k, v) for k, v in net.state_dict().items())
    optimizer = {"state": {}, "param_groups": [{
        "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
        "params": list(range(len(state)))}]}
    buffer = io.BytesIO()
    torch.save({"epoch": 255, "state_dict": state, "best_top1_acc": torch.tensor(69.5),
                "optimizer": optimizer}, buffer, _use_new_zipfile_serialization=not legacy)
    (HERE / f"{name}.pth.tar.gz").write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    np.savez(HERE / f"{name}.npz", input_nhwc=x.permute(0, 2, 3, 1).numpy().astype(np.float16),
             logits=y.numpy())


def save_resnet18_release(net_class, seed: int, name: str) -> None:
    """A `ResNet18` of `net_class` at 1/32 of the published width, 10 classes, from torch seed
    `seed`, randomized and saved as a release (zip format) with the logits of 4 inputs."""
    torch.manual_seed(seed)
    net = net_class([c // 32 for c in (64, 128, 256, 512)], classes=10)
    randomize(net)
    save_release(net, name, torch.randn(4, 3, 32, 32).half().float(), legacy=False)


def reactnet_resnet18() -> None:
    """ReActNet on Bi-Real-18 at 1/32 of the published width, 10 classes, zip format."""
    save_resnet18_release(ReActNetResNet18, 2, "reactnet_resnet18_w1_32")


# BNext (arXiv 2211.12933), written from the paper's structure with the module names of the
# official `hpi-xnor/BNext` `src/bnext.py`, in eval mode: `HardSign` (sign; its temperature
# buffer only scales before the sign), `HardBinaryConv` (sign(W) once its temperature buffer is
# below 1e-7, else clamp(W / t, -1, 1); OIHW weight, padding k // 2 on both sides), SE with
# sigmoid, ELM-Attention / FFN units, BasicBlock with `Attention` then `FFN` or `FFN_1`/`FFN_2`
# concatenated, `feature.0` stem with an unused `prelu`, head `prelu` -> mean -> `fc`.
class BNextSign(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("temperature", torch.ones(1))

    def forward(self, x):
        return torch.sign(x)


class BNextBinaryConv(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.stride, self.padding = stride, k // 2
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.001)
        self.register_buffer("temperature", torch.ones(1))

    def forward(self, x):
        if self.temperature < 1e-7:
            w = torch.sign(self.weight)
        else:
            w = (self.weight / self.temperature.clamp(min=1e-8)).clamp(-1, 1)
        return conv2d(x, w, self.stride, self.padding)


class BNextSE(nn.Module):
    """GAP -> 1x1 conv (C -> C // 8, bias) -> ReLU -> 1x1 conv (-> C, bias) -> sigmoid; the
    hidden width is at least 1 (the official code needs C >= 8, kbnn rounds up)."""

    def __init__(self, channels):
        super().__init__()
        hidden = max(channels // 8, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x):
        return torch.sigmoid(self.se(x))


class BNextUnit(nn.Module):
    """kind "attention" (ELM-Attention), "ffn3" (FFN_3x3) or "ffn1" (FFN_1x1); C -> C."""

    def __init__(self, channels, kind, stride=1):
        super().__init__()
        self.kind, self.stride = kind, stride
        self.move = LearnableBias(channels)
        self.binary_activation = BNextSign()
        self.binary_conv = BNextBinaryConv(channels, channels, 1 if kind == "ffn1" else 3,
                                           stride)
        self.norm1 = nn.BatchNorm2d(channels)
        self.norm2 = nn.BatchNorm2d(channels)
        self.activation1 = nn.PReLU(channels)
        self.activation2 = nn.PReLU(channels)
        self.se = BNextSE(channels)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1) * 0.5)

    def pool(self, x):
        return nn.functional.avg_pool2d(x, 2, 2) if self.stride == 2 else x

    def forward(self, inputs):
        x = self.binary_conv(self.binary_activation(self.move(inputs)))
        x = self.activation2(self.norm1(x))
        pooled = self.pool(inputs)
        x = self.se(self.scale * pooled + (1 - self.scale) * x) * x
        if self.kind == "attention":
            residual = self.pool(self.activation1(inputs))
            return self.norm2(x * residual) + residual
        return self.norm2(x) + pooled


class BNextBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, mode):
        super().__init__()
        self.Attention = BNextUnit(cin, "attention" if mode == "scale" else "ffn3", stride)
        if cin == cout:
            self.FFN = BNextUnit(cin, "ffn1")
        else:
            self.FFN_1 = BNextUnit(cin, "ffn1")
            self.FFN_2 = BNextUnit(cin, "ffn1")

    def forward(self, x):
        x = self.Attention(x)
        if hasattr(self, "FFN"):
            return self.FFN(x)
        return torch.cat((self.FFN_1(x), self.FFN_2(x)), dim=1)


class BNext(nn.Module):
    def __init__(self, widths, classes):
        super().__init__()
        first = nn.Module()
        first.conv1 = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        first.bn1 = nn.BatchNorm2d(widths[0])
        first.prelu = nn.PReLU(widths[0])  # created, never called (as the official stem)
        self.feature = nn.ModuleList([first])
        for i in range(1, len(widths)):
            stride = 2 if widths[i] != widths[i - 1] and widths[i] != widths[1] else 1
            mode = "bias" if i == 1 or i % 2 else "scale"
            self.feature.append(BNextBasicBlock(widths[i - 1], widths[i], stride, mode))
        self.prelu = nn.PReLU(widths[-1])
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.fc(self.prelu(run_features(self.feature, x)).mean(dim=(2, 3)))


def bnext_tiny() -> None:
    """BNext-T at 1/32 of the published width (stem 1 channel ... 32), 10 classes, annealed
    (every temperature 0.9**200 < 1e-7), zip format, with DataParallel keys."""
    torch.manual_seed(3)
    widths = [c // 32 for c in [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2]
    net = BNext(widths, classes=10)
    randomize(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".scale"):
                p.uniform_(0.0, 1.0)
            elif "activation" in name:
                p.uniform_(0.05, 0.5)
        for name, buffer in net.named_buffers():
            if name.endswith("temperature"):
                buffer.fill_(0.9 ** 200)
    save_release(net, "bnext_tiny_w1_32", torch.randn(4, 3, 32, 32).half().float(),
                 legacy=False)


class BiRealBlock(nn.Module):
    """The official Bi-Real Net BasicBlock (liuzechun/Bi-Real-net,
    pytorch_implementation/BiReal18_34/birealnet.py) in eval mode, same module names: sign ->
    HardBinaryConv (`weights` flattened (O*I*3*3, 1), mean |W| per output channel, padding=1)
    -> bn1, plus the (downsampled) input."""

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.binary_conv = OfficialBinaryConv(inplanes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn1(self.binary_conv(torch.sign(x)))
        return out + (x if self.downsample is None else self.downsample(x))


class BiRealNet18(ResNet18):
    block = BiRealBlock


def bireal_net18() -> None:
    """Bi-Real Net-18 at 1/32 of the published width, 10 classes, zip format."""
    save_resnet18_release(BiRealNet18, 3, "bireal_net18_w1_32")


# AdaBin (arXiv 2208.08084) ResNet-18, written from the paper's structure with the module and
# parameter names of the official huawei-noah/Efficient-Computing
# BinaryNetworks/AdaBin/imagenet code (nets/resnet18.py, utils/binarylib.py), in eval mode:
# `binary_a` (scalars `alpha_a`, `beta_a`; the code's output alpha_a * (sign(u) + beta_a) with
# u = (x - beta_a) / alpha_a), an OIHW `weight` binarized per output channel to
# std * sign(W - mean) + mean (population std), zero padding of the binarized input; `Maxout`
# (`pos_scale`, `neg_scale`); a shortcut around each binary conv; head: global average pool
# (the official AvgPool2d(7) at 224x224) -> `bn2` (BatchNorm1d) -> `fc`. The module also creates
# `nonlinear2` and `bn3`, which its forward never calls.
class AdaBinMaxout(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.neg_scale = nn.Parameter(torch.full((channels,), 0.25))
        self.pos_scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (self.pos_scale.view(shape) * torch.relu(x)
                - self.neg_scale.view(shape) * torch.relu(-x))


class AdaBinSign(nn.Module):
    def __init__(self):
        super().__init__()
        self.alpha_a = nn.Parameter(torch.tensor(1.0))
        self.beta_a = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return self.alpha_a * (torch.sign((x - self.beta_a) / self.alpha_a) + self.beta_a)


def adabin_weight(w):
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    std = (w - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return std * torch.sign((w - mean) / std) + mean


class AdaBinConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.binary_a = AdaBinSign()
        self.stride = stride

    def forward(self, x):
        return conv2d(self.binary_a(x), adabin_weight(self.weight), self.stride, 1)


class AdaBinBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = AdaBinConv(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.nonlinear1 = AdaBinMaxout(planes)
        self.conv2 = AdaBinConv(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.nonlinear2 = AdaBinMaxout(planes)

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.nonlinear1(self.bn1(self.conv1(x)) + residual)
        return self.nonlinear2(self.bn2(self.conv2(out)) + out)


class AdaBinResNet18(nn.Module):
    def __init__(self, widths, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.nonlinear1 = AdaBinMaxout(widths[0])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = widths[0]
        for stage, planes in enumerate(widths, start=1):
            stride = 1 if stage == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes))
            setattr(self, f"layer{stage}", nn.Sequential(
                AdaBinBasicBlock(inplanes, planes, stride, downsample),
                AdaBinBasicBlock(planes, planes, 1, None)))
            inplanes = planes
        self.bn2 = nn.BatchNorm1d(widths[-1])
        self.nonlinear2 = AdaBinMaxout(widths[-1])  # created, never called (as the official)
        self.fc = nn.Linear(widths[-1], classes)
        self.bn3 = nn.BatchNorm1d(classes)  # created, never called (as the official)

    def forward(self, x):
        x = self.maxpool(self.nonlinear1(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(self.bn2(x.mean(dim=(2, 3))))


def adabin_margins(net, x):
    """The smallest |u| of every binary activation and |W - mean| / std of every binary weight
    on `x`: both must stay clear of 0, where torch.sign gives 0 and kbnn's sign +1, and where a
    float rounding difference could flip a sign."""
    smallest = []

    def hook(module, inputs, _output):
        u = (inputs[0] - module.beta_a) / module.alpha_a
        smallest.append(float(u.abs().min()))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, AdaBinSign)]
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    weights = []
    for module in net.modules():
        if isinstance(module, AdaBinConv):
            w = module.weight
            mean = w.mean(dim=(1, 2, 3), keepdim=True)
            std = (w - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            weights.append(float(((w - mean) / std).abs().min().detach()))
    return min(smallest), min(weights)


def adabin_net(seed: int):
    """A random AdaBin ResNet-18 at 1/32 of the published width, 10 classes, and its inputs.
    Every alpha_a != 1 and beta_a != 0, so the code's activation form differs from the
    paper's."""
    torch.manual_seed(seed)
    net = AdaBinResNet18([c // 32 for c in (64, 128, 256, 512)], classes=10)
    levels = torch.tensor([0.25, 0.5, 1.0, 2.0])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("alpha_a"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("beta_a"):
                p.copy_(torch.sign(torch.randn(())) * torch.empty(()).uniform_(0.05, 0.3))
            elif name.endswith("pos_scale"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("neg_scale"):
                p.uniform_(0.05, 0.5)
            elif name.endswith(".weight") and p.dim() == 4 and p.shape[2] == 3:
                p.copy_(levels[torch.randint(0, 4, p.shape)] * torch.sign(torch.randn(p.shape)))
        for module in net.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    net.eval()
    return net, torch.randn(4, 3, 32, 32).half().float()


def adabin_resnet18() -> None:
    """AdaBin ResNet-18 at 1/32 of the published width, zip format, saved as the official
    main.py does (nn.DataParallel keys under 'state_dict', with 'epoch', 'acc', 'best_acc',
    'optimizer'): the first seed from 4 whose signs all have a margin of at least 1e-3."""
    for seed in range(4, 40):
        net, x = adabin_net(seed)
        activation_margin, weight_margin = adabin_margins(net, x)
        if activation_margin > 1e-3 and weight_margin > 1e-3:
            break
    else:
        raise AssertionError("no seed gives AdaBin sign margins above 1e-3")
    with torch.no_grad():
        y = net(x)
    assert len(set(y.argmax(-1).tolist())) > 1, y  # the top-1 check is not vacuous
    state = collections.OrderedDict(("module." + k, v) for k, v in net.state_dict().items())
    optimizer = {"state": {}, "param_groups": [{
        "lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 1e-5, "nesterov": False,
        "params": list(range(len(state)))}]}
    buffer = io.BytesIO()
    torch.save({"epoch": 120, "state_dict": state, "acc": torch.tensor(63.1),
                "best_acc": torch.tensor(63.1), "optimizer": optimizer}, buffer)
    name = "adabin_resnet18_w1_32"
    (HERE / f"{name}.pth.tar.gz").write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    np.savez(HERE / f"{name}.npz", input_nhwc=x.permute(0, 2, 3, 1).numpy().astype(np.float16),
             logits=y.numpy())
    print(f"{name}: seed {seed}, margins {activation_margin:.4f} (activations), "
          f"{weight_margin:.4f} (weights); top-1 {y.argmax(-1).tolist()}")


def big_endian_copy(src: pathlib.Path, dst: pathlib.Path, itemsizes: list[int]) -> None:
    """Rewrite a zip checkpoint as a big-endian machine would have written it: every storage
    byte-swapped (storage keys are numbered in pickling order) and byteorder = big."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            head, _, tail = info.filename.rpartition("/data/")
            if head and tail.isdigit():
                size = itemsizes[int(tail)]
                data = np.frombuffer(data, dtype=f"<u{size}").astype(f">u{size}").tobytes() \
                    if size > 1 else data
            elif info.filename.endswith("/byteorder"):
                data = b"big"
            zout.writestr(info.filename, data)


def check_payload_is_live(path: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        marker = pathlib.Path(tmp) / "marker"
        code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
        subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                       env={**os.environ, "KBNN_PWNED_MARKER": str(marker)})
        assert marker.exists(), f"payload of {path.name} did not run under torch.load"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    if sys.argv[1:] == ["bnext"]:  # only the BNext fixture (the others unchanged)
        bnext_tiny()
        return
    if sys.argv[1:] == ["bireal"]:  # only the Bi-Real fixture (the others unchanged)
        bireal_net18()
        return
    if sys.argv[1:] == ["adabin"]:  # only the AdaBin fixture (the others unchanged)
        adabin_resnet18()
        return
    dtypes = dtype_tensors()
    torch.save(dtypes, HERE / "dtypes.pt")
    save_expected("dtypes", dtypes)

    itemsizes = [t.element_size() for t in dtypes.values()]
    big_endian_copy(HERE / "dtypes.pt", HERE / "dtypes_big_endian.pt", itemsizes)

    views = view_tensors()
    torch.save(views, HERE / "views.pt")
    save_expected("views", views)

    legacy = collections.OrderedDict(list(dtypes.items())[:4])
    legacy["view"] = views["base"][1:3, ::2]
    torch.save(legacy, HERE / "legacy.pth", _use_new_zipfile_serialization=False)
    save_expected("legacy", legacy)

    small = collections.OrderedDict(w=torch.ones(2, 2), b=torch.zeros(2))
    torch.save({"model": small, "epoch": 1}, HERE / "nested_model.pt")

    system = Evil(os.system, 'touch "$KBNN_PWNED_MARKER"')
    torch.save({"state_dict": small, "payload": system}, HERE / "malicious_system.pt")
    check_payload_is_live(HERE / "malicious_system.pt")
    code = "open(__import__('os').environ['KBNN_PWNED_MARKER'], 'w').write('pwned')"
    torch.save({"state_dict": small, "payload": Evil(eval, code)}, HERE / "malicious_eval.pth",
               _use_new_zipfile_serialization=False)
    check_payload_is_live(HERE / "malicious_eval.pth")
    torch.save(nn.Linear(2, 2), HERE / "whole_module.pt")

    tiny_model()
    reactnet_a()
    reactnet_resnet18()
    bireal_net18()
    bnext_tiny()
    adabin_resnet18()
    total = sum(p.stat().st_size for p in HERE.iterdir())
    print(f"wrote {len(list(HERE.iterdir()))} files, {total / 1024:.1f} KiB, torch {torch.__version__}")
    assert total < 400 * 1024


if __name__ == "__main__":
    main()
