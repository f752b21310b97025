"""Pieces shared by the ConvMLP and Pure-MLP families.

Tensor layouts are named in the comments: NCHW is ``(N, C, H, W)``, NHWC is ``(N, H, W, C)``.
Module and parameter names follow the published ConvMLP code, so that its checkpoints load
without renaming.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..compat import is_autocast_enabled, is_compiling


def layer_norm(x: torch.Tensor, normalized_shape: List[int], weight: Optional[torch.Tensor],
               bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """``F.layer_norm``, in float32 (returning float32) under autocast on every device, as CUDA's
    autocast does (the CPU's does not). A leaf of torch.fx graphs (wrapped below); TorchScript
    compiles the plain call (autocast is not scriptable)."""
    if not torch.jit.is_scripting():
        if is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x.float(), normalized_shape, weight, bias, eps)
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Zero-pads an NHWC tensor at the bottom/right to even height and width (a leaf of torch.fx
    graphs: its branch depends on the input's size). Traced (torch.jit.trace for ONNX,
    torch.compile, torch.export) it pads by the size-dependent amounts without the branch, so
    that height and width stay symbolic; in eager mode only odd sizes are padded (a copy)."""
    h, w = x.shape[1], x.shape[2]
    if not torch.jit.is_scripting():
        if torch.jit.is_tracing() or is_compiling():  # pad to 2 * ceil(H / 2): a size whose halves are provably equal
            return F.pad(x, [0, 0, 0, 2 * ((w + 1) // 2) - w, 0, 2 * ((h + 1) // 2) - h])
    if h % 2 == 1 or w % 2 == 1:
        x = F.pad(x, [0, 0, 0, w % 2, 0, h % 2])
    return x


#: The smallest input height and width of the backbones: the stride of F4.
MIN_SIZE = 32


def check_images(x: torch.Tensor, in_channels: int, min_size: int = MIN_SIZE) -> None:
    """Raises ValueError unless ``x`` is a floating-point N x in_channels x H x W tensor with H, W
    at least ``min_size``. The message, which names the input's shape, is built only on failure:
    on the normal path no size becomes a Python value, so that torch.compile and torch.export keep
    batch, height and width symbolic (their guards: the channels, H and W at least ``min_size``).
    A leaf of torch.fx graphs (wrapped below) and scriptable."""
    if not torch.jit.is_scripting():
        if not isinstance(x, torch.Tensor):
            raise ValueError(f'input of type {type(x).__name__} is invalid: expected an N x {in_channels} x H x W '
                             'tensor')
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError('input of shape ' + shape_text(x) + ' is invalid: expected an N x ' + str(in_channels)
                         + ' x H x W tensor')
    if x.shape[2] < min_size or x.shape[3] < min_size:  # two comparisons: min() would order H and W
        raise ValueError('input of shape ' + shape_text(x) + ' is too small: height and width must be at least '
                         + str(min_size) + ' (the stride of F4)')
    if not x.is_floating_point():
        raise ValueError('input of dtype ' + str(x.dtype) + ' is invalid: expected a floating-point tensor '
                         '(normalised images, as the data preprocessor gives)')


def shape_text(x: torch.Tensor) -> str:
    """``x``'s shape as ``'(1, 3, 31, 64)'``, for error messages (it makes every size a Python int)."""
    return '(' + ', '.join([str(int(s)) for s in x.shape]) + ')'


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, each sample's branch is zeroed with probability
    ``drop_prob`` and the kept ones scaled by ``1 / (1 - drop_prob)``; the identity otherwise."""
    if drop_prob == 0. or not training:
        return x
    keep = 1. - drop_prob
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


# torch.fx records these as calls instead of tracing into their size- and mode-dependent branches
# (drop_path builds its mask's shape from the input's: torch 2.1's fx cannot trace that).
torch.fx.wrap('layer_norm')
torch.fx.wrap('pad_to_even')
torch.fx.wrap('drop_path')


class DropPath(nn.Module):
    """Stochastic depth of a residual branch (:func:`drop_path`), a leaf of torch.fx graphs.

    Args:
        drop_prob (float): Probability of dropping a sample's branch in training.
    """

    def __init__(self, drop_prob: float = 0.1) -> None:
        super().__init__()
        if not 0 <= drop_prob < 1:
            raise ValueError(f'drop_prob={drop_prob!r} is invalid: expected a probability in [0, 1)')
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that computes in float32 under autocast (fp16 or bf16) on every device and
    returns float32 (:func:`layer_norm`): statistics never in half precision. The same
    parameters, so checkpoints load unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class ChannelMLP(nn.Module):
    """Two linear layers with an exact GELU between them, applied on the last dimension.

    Args:
        channels (int): Input and output channels.
        hidden_channels (int): Channels of the hidden layer.
    """

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MLPBlock(nn.Module):
    """Channel-MLP block on NHWC tensors: ``x + mlp1(LN1 x)``, then ``x + mlp2(LN2 x)``.
    Pure-MLP's block; ConvMLP's block adds a depthwise conv between the two.

    Args:
        channels (int): Channels of the block.
        hidden_channels (int): Hidden channels of both channel MLPs.
        drop_path_rate (float): Stochastic depth of both MLP branches.
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, channels: int, hidden_channels: int, drop_path_rate: float = 0.,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = LayerNorm(channels)
        self.channel_mlp1 = ChannelMLP(channels, hidden_channels)
        self.norm2 = LayerNorm(channels)
        self.channel_mlp2 = ChannelMLP(channels, hidden_channels)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.channel_mlp1(self.norm1(x)))
        return x + self.drop_path(self.channel_mlp2(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward(x)
        return maybe_checkpoint(self, x, self.with_cp)


class MLPStage(nn.Module):
    """A stage of both families: blocks, then (except in the last stage) a stride-2 downsampling,
    computed on NHWC tensors. Takes and returns NCHW views (permutes of the NHWC tensors, no
    copies), so that a stage's output is a feature map as the backbone returns it: forward hooks
    and timm's and torchvision's feature extractors take F2-F4 from the stages.

    Args:
        block (type): The block class, called as ``block(channels, hidden, drop_path_rate, with_cp)``.
        num_blocks (int): Number of blocks.
        channels (int): Channels of the blocks.
        mlp_ratio (float): Hidden channels of the MLPs = ``int(channels * mlp_ratio)``.
        drop_path_rate (float): Stochastic depth rises linearly from 0 to this over the blocks.
        downsample (nn.Module, optional): NHWC -> NHWC at half the size; None for none.
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, block: Callable[..., nn.Module], num_blocks: int, channels: int, mlp_ratio: float,
                 drop_path_rate: float, downsample: Optional[nn.Module], with_cp: bool = False) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.blocks = nn.Sequential(*[block(channels, hidden, rate, with_cp)
                                      for rate in drop_path_rates(num_blocks, drop_path_rate)])
        self.downsample_mlp = downsample or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # NCHW -> NHWC view (N, H, W, C)
        x = self.downsample_mlp(self.blocks(x))  # (N, H/2, W/2, C'), the last stage (N, H, W, C)
        return x.permute(0, 3, 1, 2)  # NHWC -> NCHW view (N, C', H', W')


#: A norm layer factory: ``norm(channels)`` -> a module on NCHW tensors.
NormFactory = Callable[[int], nn.Module]

#: The ``norm_cfg`` types the models build with torch alone (mmcv's names for them).
TORCH_NORMS = {'BN': nn.BatchNorm2d, 'BN2d': nn.BatchNorm2d, 'SyncBN': nn.SyncBatchNorm, 'GN': nn.GroupNorm,
               'IN': nn.InstanceNorm2d, 'IN2d': nn.InstanceNorm2d}


def torch_norm(norm_cfg: Dict, channels: int) -> nn.Module:
    """A norm layer of ``channels`` from an mmcv-style ``norm_cfg`` with torch alone: ``type`` one
    of :data:`TORCH_NORMS`, ``requires_grad`` (default True) and the layer's own arguments
    (``eps``, ``momentum``, ``affine``; ``num_groups`` for GN).

    Raises:
        ValueError: another type, or arguments the layer does not take.
    """
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', None)
    requires_grad = cfg.pop('requires_grad', True)
    if kind not in TORCH_NORMS:
        raise ValueError(f'norm_cfg={norm_cfg!r} is invalid: type {kind!r} is not one of {sorted(TORCH_NORMS)} '
                         '(with mmcv installed, any norm of its registry)')
    try:
        layer = nn.GroupNorm(num_channels=channels, **cfg) if kind == 'GN' else TORCH_NORMS[kind](channels, **cfg)
    except TypeError as error:
        raise ValueError(f'norm_cfg={norm_cfg!r} is invalid for {TORCH_NORMS[kind].__name__}: {error}') from error
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return layer


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, norm: NormFactory = nn.BatchNorm2d,
                 stride: int = 1) -> List[nn.Module]:
    """A bias-free convolution, its norm (BatchNorm in the published models) and ReLU, as a list to
    splice into ``nn.Sequential``."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        norm(out_channels),
        nn.ReLU(inplace=True),
    ]


class ConvTokenizer(nn.Module):
    """The convolutional tokenizer ("patch converter"): stride 4, NCHW in and out.

    Three 3x3 conv-BN-ReLU (the first with stride 2, widths C/2, C/2, C), then a 3x3 max pool
    with stride 2.

    Args:
        out_channels (int): The tokenizer width C.
        in_channels (int): Input channels. Defaults to 3.
        norm (callable): ``norm(channels)`` -> the norm layer after each conv. Defaults to BatchNorm.
    """

    def __init__(self, out_channels: int, in_channels: int = 3, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        mid = out_channels // 2
        self.block = nn.Sequential(
            *conv_bn_relu(in_channels, mid, 3, norm, stride=2),
            *conv_bn_relu(mid, mid, 3, norm),
            *conv_bn_relu(mid, out_channels, 3, norm),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class PatchMerging(nn.Module):
    """Swin-style 2x downsampling on NHWC tensors: each 2x2 neighbourhood is concatenated
    (4 x in_channels), normalised and projected by a bias-free linear layer. Odd sizes are
    zero-padded at the bottom/right, giving ``ceil(H / 2) x ceil(W / 2)``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_even(x)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))  # (N, ceil(H/2), ceil(W/2), out_channels)


class ConvDownsample(nn.Module):
    """ConvMLP's 2x downsampling on NHWC tensors: a stride-2 3x3 convolution with bias, giving
    ``ceil(H / 2) x ceil(W / 2)``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x.permute(0, 3, 1, 2))  # NHWC -> NCHW (N, C, H, W)
        return x.permute(0, 2, 3, 1)  # NCHW -> NHWC (N, ceil(H/2), ceil(W/2), out_channels)


def drop_path_rates(num_blocks: int, max_rate: float) -> List[float]:
    """The published per-stage schedule: rates rising linearly from 0 to ``max_rate`` (computed
    without tensors, so that models can be built on the meta device)."""
    return [max_rate * i / (num_blocks - 1) if num_blocks > 1 else 0. for i in range(num_blocks)]


def maybe_checkpoint(module: nn.Module, x: torch.Tensor, with_cp: bool) -> torch.Tensor:
    """Runs ``module._forward(x)``, through gradient checkpointing when asked and useful."""
    if with_cp and x.requires_grad:
        return checkpoint(module._forward, x, use_reentrant=False)
    return module._forward(x)


def check_out_indices(out_indices: Union[int, Sequence[int]], num_outs: int) -> Tuple[int, ...]:
    """Validates ``out_indices`` against ``num_outs`` feature maps; negative indices count from
    the end. Returns sorted, non-negative, unique indices.

    Raises:
        ValueError: empty, not integers, out of range or repeated.
    """
    indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    allowed = f'integers in [{-num_outs}, {num_outs - 1}]'
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError(f'out_indices={out_indices!r} is invalid: expected a non-empty list of {allowed}')
    bad = [i for i in indices if not -num_outs <= i < num_outs]
    if bad:
        raise ValueError(f'out_indices={out_indices!r} has {bad} out of range: allowed are {allowed}')
    normalised = [i % num_outs for i in indices]
    if len(set(normalised)) != len(normalised):
        raise ValueError(f'out_indices={out_indices!r} names the same feature map twice')
    return tuple(sorted(normalised))


def resolve_arch(arch: Union[str, Dict], zoo: Dict[str, Dict], family: str,
                 choices: Optional[Dict[str, Tuple]] = None, defaults: Optional[Dict] = None) -> Dict:
    """Looks up ``arch`` in an arch table (case-insensitive), or validates a custom dict
    against the keys and types of the table's entries.

    Args:
        arch (str | dict): A name of ``zoo`` or a dict.
        zoo (dict): The arch table.
        family (str): The model's name, for messages.
        choices (dict, optional): Keys whose values are one of a tuple of allowed values.
        defaults (dict, optional): Values of keys a dict may leave out.

    Raises:
        ValueError: unknown name, or a dict with missing/unknown keys or bad values.
    """
    choices, defaults = choices or {}, defaults or {}
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise ValueError(f'arch={arch!r} is not a {family} arch: choose one of {sorted(zoo)} or pass a dict')
        return dict(zoo[arch.lower()])
    if not isinstance(arch, dict):
        raise ValueError(f'arch={arch!r} must be a name ({sorted(zoo)}) or a dict, not {type(arch).__name__}')
    template = next(iter(zoo.values()))
    arch = {**defaults, **arch}
    missing, unknown = set(template) - set(arch), set(arch) - set(template)
    if missing or unknown:
        raise ValueError(f'arch dict {arch!r}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}; '
                         f'a {family} arch needs {sorted(set(template) - set(defaults))} and may set '
                         f'{sorted(defaults)}')
    for key, ref in template.items():
        value = arch[key]
        if key in choices:
            ok = any(value == c and type(value) is type(c) for c in choices[key])
            expected = f'one of {list(choices[key])}'
        elif isinstance(ref, (tuple, list)):
            ok = (isinstance(value, (tuple, list)) and len(value) == len(ref)
                  and all(isinstance(v, int) and v > 0 for v in value))
            expected = f'{len(ref)} positive integers'
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            expected = 'a positive number'
        if not ok:
            raise ValueError(f'arch[{key!r}]={value!r} is invalid: expected {expected}')
    return dict(arch)
