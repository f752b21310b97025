"""What every backbone of the family shares: arguments, freezing, init and pretrained loading.

Four feature stages deep. Feature stage ``i`` produces F(i+1):

=====  ==================  ======  =====================================================
stage  output              stride  modules (conv stem stages / ``'mlp'`` stem stage, Pure-MLP)
=====  ==================  ======  =====================================================
0      F1, C channels      4       tokenizer / tokenizer
1      F2, dims[0]         8       conv_stages / stages.0
2      F3, dims[1]         16      stages.0 / stages.1
3      F4, dims[2]         32      stages.1 + stages.2 / stages.2 + stages.3
=====  ==================  ======  =====================================================

``out_indices`` picks among F1-F4 and ``frozen_stages`` counts in the same stages.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, kaiming_init, trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import CheckpointError, load_checkpoint
from .layers import MIN_SIZE, check_out_indices

#: Keys of a classification checkpoint that belong to its head, not to the backbone.
HEAD_PREFIXES = ('norm.', 'head.')


class MultiStageBackbone(BaseModule):
    """Base class of the backbones (:class:`~convmlp_mm.models.convmlp.ConvMLP` and its
    :class:`~convmlp_mm.models.convmlp.PureMLP` entry). Subclasses build their modules, fill
    :attr:`feature_stages` (one list of modules per feature stage, in order) and
    :attr:`channels`, then call :meth:`_finish_init`.

    Args:
        out_indices (int | Sequence[int]): Which of F1-F4 ``forward`` returns (0-3; negative
            values count from the end). Defaults to all four.
        frozen_stages (int): Stages 0..frozen_stages (see the module docstring) get
            ``requires_grad=False`` and stay in eval mode. -1 (default) freezes nothing.
        norm_eval (bool): Keep every BatchNorm in eval mode while training (frozen running
            statistics; affine parameters still train unless frozen). Defaults to False.
        with_cp (bool): Gradient checkpointing per block: less memory, same outputs and
            gradients, one more forward per block in backward. Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads a
            published classification checkpoint or one of ours (see :meth:`load_pretrained`);
            an optional ``sha256`` is checked before the file is unpickled;
            None applies the published random initialisation; any other mmengine init config is
            passed to mmengine.
        in_channels (int): Channels of the input images. Defaults to 3 (the published models).
    """
    strides = (4, 8, 16, 32)
    num_stages = 4
    #: Memory format of the maps ``forward`` returns: contiguous NCHW; channels-last after
    #: :func:`~convmlp_mm.models.fusion.prepare_inference` (the layout they are computed in).
    out_memory_format = torch.contiguous_format
    #: mmengine's BaseModule property, which TorchScript need not compile
    __jit_unused_properties__ = ['is_init']

    def __init__(self, out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg: Optional[dict] = None,
                 in_channels: int = 3) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f'in_channels={in_channels!r} is invalid: expected a positive integer (3 for RGB)')
        self.in_channels = in_channels
        self.out_indices = check_out_indices(out_indices, self.num_stages)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages!r} is invalid: expected an integer in '
                             f'[-1, {self.num_stages - 1}] (-1 freezes nothing)')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained' and 'checkpoint' not in init_cfg:
            raise ValueError(f"init_cfg={init_cfg!r} has type 'Pretrained' but no 'checkpoint'")
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.feature_stages: List[List[nn.Module]] = []
        self.channels: tuple = ()

    def _finish_init(self) -> None:
        """Called by subclasses once their modules exist."""
        assert len(self.feature_stages) == self.num_stages and len(self.channels) == self.num_stages
        #: channels and strides of the returned maps, in ``out_indices`` order
        self.out_channels = tuple(self.channels[i] for i in self.out_indices)
        self.out_strides = tuple(self.strides[i] for i in self.out_indices)
        self._freeze_stages()

    # ----------------------------------------------------------------- training behaviour
    def _freeze_stages(self) -> None:
        for modules in self.feature_stages[:self.frozen_stages + 1]:
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'MultiStageBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    #: The smallest input height and width: the stride of F4.
    min_size = MIN_SIZE

    # ------------------------------------------------------------ layer-wise lr decay
    def layer_units(self) -> List[str]:
        """Module names of the backbone's layers for layer-wise learning-rate decay, input first:
        the tokenizer, each conv block (a conv stage without blocks is one layer), each MLP
        block; a stage's downsampling belongs to its last block."""
        units = ['tokenizer']
        conv = getattr(self, 'conv_stages', None)
        if conv is not None:
            blocks = getattr(conv, 'conv_blocks', None)
            units += [f'conv_stages.conv_blocks.{i}' for i in range(len(blocks))] if blocks else ['conv_stages']
        for s, stage in enumerate(getattr(self, 'stages', [])):
            units += [f'stages.{s}.blocks.{b}' for b in range(len(stage.blocks))]
        return units

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """mmpretrain's layer-wise decay protocol: ``(depth of param_name, number of depths)``.
        Depth i is :meth:`layer_units` ``[i]``; names outside ``prefix`` (the head) get the last
        depth, so their lr is the base lr and the tokenizer's the most decayed.

        Args:
            param_name (str): A parameter name of the model that holds this backbone.
            prefix (str): The backbone's prefix in those names, e.g. ``'backbone.'``.
        """
        units = self.layer_units()
        if not param_name.startswith(prefix):
            return len(units), len(units) + 1
        name = param_name[len(prefix):]
        for depth in range(len(units) - 1, -1, -1):
            if name.startswith(units[depth] + '.'):
                return depth, len(units) + 1
        # not inside a block: a stage's downsampling, which goes with that stage's last block
        stage = '.'.join(name.split('.')[:2]) if name.startswith('stages.') else name.split('.')[0]
        depths = [d for d, unit in enumerate(units) if unit == stage or unit.startswith(stage + '.')]
        if depths:
            return max(depths), len(units) + 1
        raise ValueError(f'{param_name!r} is not a parameter of {type(self).__name__} (prefix {prefix!r})')

    # ------------------------------------------------------------------------ init
    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('sha256'))
        elif cfg:
            super().init_weights()
            return
        else:
            self.apply(init_published)
        self._is_init = True

    # ------------------------------------------------------------------ checkpoints
    def load_pretrained(self, filename: str, sha256: Optional[str] = None) -> None:
        """Loads backbone weights from ``filename`` (a path or URL), strictly, weights-only
        (:mod:`convmlp_mm.checkpoint`), after checking its SHA-256 when ``sha256`` is given.

        Accepted: a published classification checkpoint (a raw state dict, or wrapped in
        ``state_dict``/``model``, with or without ``module.``) whose ``norm.*``/``head.*`` keys
        are ignored, and mm checkpoints of ours (detector, segmentor or classifier), whose
        ``backbone.*`` keys are taken. Any other missing or unexpected key, or a shape that
        differs, raises an error naming the file and the keys.
        """
        checkpoint = load_checkpoint(filename, map_location='cpu', sha256=sha256)  # CheckpointError names the file
        state = backbone_state_dict(checkpoint, filename)
        load_state_dict_exactly(self, state, filename)


def unwrap_state_dict(checkpoint: object, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint: unwraps ``state_dict``/``model`` and strips ``module.``.

    Raises:
        CheckpointError: the file holds no state dict.
    """
    state = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f'checkpoint {filename!r} holds no state dict (got {type(state).__name__}); expected '
                              "a dict of tensors, or one under 'state_dict' or 'model'")
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def backbone_state_dict(checkpoint: object, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The backbone's part of any checkpoint we accept (see :meth:`load_pretrained`): the
    unwrapped state dict's ``backbone.*`` keys when there are any, else all but the
    classification head (``norm.*``, ``head.*``)."""
    state = unwrap_state_dict(checkpoint, filename)
    if any(k.startswith('backbone.') for k in state):
        return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def load_state_dict_exactly(module: nn.Module, state: Dict[str, torch.Tensor], filename: str) -> None:
    """``module.load_state_dict(state)`` that reports every problem at once, with the file."""
    check_state_dict_fits(module, state, filename)
    module.load_state_dict(state, strict=True)


def check_state_dict_fits(module: nn.Module, state: Dict[str, torch.Tensor], filename: str) -> None:
    """Raises :class:`CheckpointError` listing missing and unexpected keys and shape mismatches
    (key: both shapes) unless ``state`` fits ``module`` exactly."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        problems = [f'{title} ({len(keys)}): {", ".join(keys[:20])}{" ..." if len(keys) > 20 else ""}'
                    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                                        ('shape mismatches', mismatched)) if keys]
        if not set(own) & set(state):
            problems.append(f'none of its keys is a {type(module).__name__} key: expected a published '
                            f'{type(module).__name__} classification checkpoint, or a classifier, detector or '
                            f'segmentor of ours with this backbone (keys backbone.*)')
        raise CheckpointError(f'checkpoint {filename!r} does not fit {type(module).__name__}'
                              f'{_arch_hint(module)}:\n  ' + '\n  '.join(problems))


def _arch_hint(module: nn.Module) -> str:
    arch = getattr(module, 'arch', None)
    return f' (arch {arch})' if arch else ''


def init_published(module: nn.Module) -> None:
    """The published random initialisation, applied per module."""
    if isinstance(module, nn.Linear):
        trunc_normal_init(module, std=.02, bias=0)
    elif isinstance(module, (nn.LayerNorm, _BatchNorm)):
        constant_init(module, 1, bias=0)
    elif isinstance(module, nn.Conv2d):
        kaiming_init(module, mode='fan_out', nonlinearity='relu', distribution='normal')
