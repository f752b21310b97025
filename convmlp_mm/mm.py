"""The adapters layer: the models as first-class OpenMMLab modules, registered by name.

:class:`ConvMLP` and :class:`PureMLP` are the backbones of :mod:`convmlp_mm.models` as mmengine
``BaseModule`` s (``init_cfg``); :class:`MLPClsHead` is the published head for mmpretrain's
``ImageClassifier``. They live in the ``convmlp_mm`` scope (a child of mmengine's root
``MODELS``) and are added, under the same names, to the ``MODELS`` registry of every host library
that is installed (mmdet, mmseg, mmpretrain), so ``type='ConvMLP'`` works in a config of any of
them, as does ``type='mmdet.ConvMLP'``. A host that is not installed is skipped; one that is
installed but fails to import raises its own error. Registering adds names and replaces none
(mmengine refuses a name that is taken).
"""
import copy
import importlib
import importlib.util
import warnings
from typing import List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope, Registry

from . import models
from .compat import HAS_MMCV
from .engine.checkpoint import load_checkpoint
from .models.classifier import pool_tokens
from .models.layers import LayerNorm, torch_norm

#: Our scope's model registry.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='convmlp_mm', locations=['convmlp_mm.mm'])

#: The host libraries whose registries receive our classes, when installed; also the scopes
#: (``default_scope``) a config of our tools can have.
HOSTS = ('mmdet', 'mmseg', 'mmpretrain')


def installed_hosts() -> List[str]:
    """The host libraries that are installed (found, not yet imported)."""
    return [name for name in HOSTS if importlib.util.find_spec(name) is not None]


def host_registries(kind: str = 'MODELS') -> List[Registry]:
    """The ``kind`` registries (``'MODELS'``, ``'OPTIM_WRAPPER_CONSTRUCTORS'``) of the installed
    hosts; importing a host's ``registry`` module raises what it raises."""
    return [getattr(importlib.import_module(f'{host}.registry'), kind) for host in installed_hosts()]


def check_scope(cfg: Config, filename: str) -> str:
    """The config's ``default_scope``, which decides which host builds it.

    Raises:
        ValueError: the config names no host of :data:`HOSTS`.
    """
    scope = cfg.get('default_scope')
    if scope not in HOSTS:
        raise ValueError(f'{filename}: default_scope={scope!r} is not one of {HOSTS}; '
                         "inherit an mmdet::, mmseg:: or mmpretrain:: base config")
    return scope


def build_host_model(cfg: Config, filename: str) -> Tuple[nn.Module, str]:
    """``(model, scope)``: ``cfg.model`` built by the ``MODELS`` registry of the config's host, in
    its scope, as its Runner builds it (the top-level ``data_preprocessor`` of mmpretrain-style
    configs is the model's where it has none), with no weights initialised or read.

    Raises:
        ValueError: the config names no host of :data:`HOSTS`.
    """
    scope = check_scope(cfg, filename)
    model = cfg.model
    if isinstance(model, dict) and cfg.get('data_preprocessor') is not None and 'data_preprocessor' not in model:
        model = dict(model, data_preprocessor=cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(f'{scope}.registry').MODELS.build(model), scope


def register_model(cls: Type) -> Type:
    """Class decorator: registers ``cls`` into our scope and every installed host library."""
    for registry in [MODELS] + host_registries():
        registry.register_module(module=cls)
    return cls


def mm_norm(norm_cfg: dict, channels: int) -> nn.Module:
    """A norm layer of ``channels`` from ``norm_cfg`` through mmcv's ``build_norm_layer`` (any norm
    of its registry: BN, SyncBN, GN, IN, ...); torch's choices
    (:func:`~convmlp_mm.models.layers.torch_norm`) where mmcv is not installed.

    Raises:
        ValueError: a type neither knows, or arguments the layer does not take.
    """
    if not HAS_MMCV:
        return torch_norm(norm_cfg, channels)
    from mmcv.cnn import build_norm_layer
    try:
        return build_norm_layer(norm_cfg, channels)[1]
    except (KeyError, TypeError, AssertionError) as error:
        raise ValueError(f'norm_cfg={norm_cfg!r} is invalid: {error}') from error


#: The keys of a ``Pretrained`` init_cfg: mmengine's and ``sha256``.
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'sha256')


class _InitCfg:
    """What ``BaseModule`` adds to a backbone of :mod:`convmlp_mm.models`: ``init_cfg``, and
    ``pretrained`` as mm backbones take it.

    ``init_cfg``: ``dict(type='Pretrained', checkpoint=PATH_OR_URL, prefix=None, map_location='cpu',
    sha256=None)`` loads a published classification checkpoint or an mm checkpoint of ours (or,
    with ``prefix``, the keys under it) strictly, weights-only
    (:func:`convmlp_mm.engine.checkpoint.load_checkpoint`; ``sha256`` is checked before the file
    is unpickled); None applies the published random initialisation; any other mmengine init
    config is mmengine's. ``pretrained=PATH_OR_URL`` (what mmseg's segmentors hand their backbone
    from ``model.pretrained``) is deprecated and means that ``init_cfg``. Norm layers are built
    through mmcv (:func:`mm_norm`). Every other argument is the model's.
    """
    #: mmengine's BaseModule property, which TorchScript need not compile
    __jit_unused_properties__ = ['is_init']
    build_norm = staticmethod(mm_norm)

    def __init__(self, *args, init_cfg: Optional[dict] = None, pretrained: Optional[str] = None, **kwargs) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'pretrained={pretrained!r} and init_cfg={init_cfg!r} are both given: set one. '
                                 "(mmseg's segmentors pass model.pretrained to the backbone: set "
                                 'model.pretrained=None when the backbone has an init_cfg)')
            if not isinstance(pretrained, str):
                raise ValueError(f'pretrained={pretrained!r} is invalid: expected the path or URL of a checkpoint')
            warnings.warn(f'{type(self).__name__}: pretrained is deprecated; use '
                          f"init_cfg=dict(type='Pretrained', checkpoint={pretrained!r})", DeprecationWarning)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            unknown = sorted(set(init_cfg) - set(PRETRAINED_KEYS))
            if 'checkpoint' not in init_cfg or unknown:
                raise ValueError(f"init_cfg={init_cfg!r} of type 'Pretrained' is invalid: "
                                 + (f'unknown keys {unknown}; ' if unknown else "no 'checkpoint'; ")
                                 + f'allowed are {list(PRETRAINED_KEYS)}')
        super().__init__(*args, **kwargs)  # the model's __init__, then BaseModule's (init_cfg None)
        self.init_cfg = copy.deepcopy(init_cfg)

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('sha256'), reader=load_checkpoint,
                                 prefix=cfg.get('prefix'), map_location=cfg.get('map_location', 'cpu'))
        elif cfg:
            BaseModule.init_weights(self)
            return
        else:
            super().init_weights()
        self._is_init = True


@register_model
class ConvMLP(_InitCfg, models.ConvMLP, BaseModule):
    """:class:`convmlp_mm.models.ConvMLP` as an mmengine ``BaseModule``: the same arguments and
    ``init_cfg`` (see :class:`_InitCfg`)."""


@register_model
class PureMLP(ConvMLP, models.PureMLP):
    """:class:`convmlp_mm.models.PureMLP` as an mmengine ``BaseModule`` (and a :class:`ConvMLP`, as
    the torch models are): the same arguments and ``init_cfg`` (see :class:`_InitCfg`)."""


if 'mmpretrain' in installed_hosts():
    from mmpretrain.models.heads import ClsHead

    from .engine.layer_decay import BackboneLayerDecayOptimWrapperConstructor

    for _registry in host_registries('OPTIM_WRAPPER_CONSTRUCTORS'):
        _registry.register_module(module=BackboneLayerDecayOptimWrapperConstructor)

    @register_model
    class MLPClsHead(ClsHead):
        """The published ConvMLP / Pure-MLP classification head for mmpretrain's
        ``ImageClassifier``: takes the last backbone output (N, C, H, W).

        Args:
            num_classes (int): Number of classes.
            in_channels (int): Channels of the last backbone output.
            loss (dict): Classification loss config. Defaults to cross-entropy.
            topk (int | tuple): Top-k accuracies to report. Defaults to (1, ).
            init_cfg (dict, optional): Defaults to the published init (truncated normal, std .02).
        """

        def __init__(self, num_classes: int, in_channels: int,
                     loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                     topk: Union[int, Tuple[int, ...]] = (1, ),
                     init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=.02)) -> None:
            super().__init__(loss=loss, topk=topk, init_cfg=init_cfg)
            self.norm = LayerNorm(in_channels)
            self.fc = nn.Linear(in_channels, num_classes)

        def pre_logits(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
            return pool_tokens(self.norm, feats[-1])

        def forward(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
            return self.fc(self.pre_logits(feats)).float()  # softmax and loss always in float32 (mmpretrain)
