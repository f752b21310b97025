"""timm entry points: ``timm.create_model('convmlp_s')`` (and m, l, pure_mlp_s/m/l).

``features_only=True`` gives F1-F4 through :meth:`MLPClassifier.forward_intermediates`
(``feature_cls='getter'``, the default) or any other extractor of timm's: ``'hook'`` (forward hooks
on the modules ``feature_info`` names), ``'fx'`` (torch.fx), ``'dict'`` and ``'list'`` (which run
a model's children in turn: they get the backbone as one chain, :func:`backbone_chain`), the same
maps from each; ``out_indices`` picks among them.
``pretrained=True`` downloads the published ImageNet weights named in ``default_cfgs``
(ConvMLP only: Pure-MLP has no published weights), or reads
``pretrained_cfg_overlay=dict(file=PATH)``, weights-only with torch alone
(:func:`~convmlp_mm.models.weights.read_checkpoint`); with another ``num_classes`` the classifier
stays freshly initialised (none with ``num_classes=0``); ``features_only`` models are loaded before
timm's feature wrapper prunes the head. Imported only when timm is installed.
"""
from functools import partial

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (FeatureDictNet, FeatureGraphNet, FeatureHookNet, FeatureListNet, build_model_with_cfg,
                         generate_default_cfgs, register_model)
from timm.models._features import FeatureGetterNet
from timm.models._manipulate import adapt_input_conv

from .classifier import MLPClassifier, backbone_chain, timm_checkpoint_filter
from .weights import CheckpointError, load_state_dict_exactly, read_checkpoint, unwrap_state_dict

PUBLISHED_URL = 'https://shi-labs.com/projects/convmlp/checkpoints/convmlp_{}_imagenet.pth'


def _cfg(url: str = '') -> dict:
    return dict(url=url, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.9,
                interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv='backbone.tokenizer.block.0', classifier='head')


default_cfgs = generate_default_cfgs({
    **{f'convmlp_{a}.in1k': _cfg(PUBLISHED_URL.format(a)) for a in 'sml'},
    **{f'pure_mlp_{a}': _cfg() for a in 'sml'},
})


def _create(backbone: str, arch: str, variant: str, pretrained: bool, **kwargs) -> MLPClassifier:
    feature_cfg = dict(out_indices=(0, 1, 2, 3), feature_cls='getter', **kwargs.pop('feature_cfg', None) or {})
    if kwargs.get('features_only', False):
        _check_out_indices(variant, kwargs.get('out_indices', feature_cfg['out_indices']))
        # timm calls feature_cls(classifier, **feature_cfg); ours loads the weights first, then wraps
        feature_cls = kwargs.pop('feature_cls', feature_cfg['feature_cls'])
        feature_cfg['feature_cls'] = partial(_features, feature_cls=feature_cls, pretrained=pretrained)
    model = build_model_with_cfg(MLPClassifier, variant, False, backbone=backbone, arch=arch,
                                 feature_cfg=feature_cfg, **kwargs)
    if pretrained and not kwargs.get('features_only', False):
        _load_pretrained(model, model.pretrained_cfg)
    return model


def _check_out_indices(variant: str, out_indices) -> None:
    """``features_only`` has F1-F4: an index past them is an error that says what to pass (Hugging
    Face's DETRs ask a timm backbone for a fifth level with ``use_timm_backbone=True``)."""
    indices = range(-out_indices, 0) if isinstance(out_indices, int) else out_indices  # int: timm's "the last n"
    missing = [i for i in indices if not -4 <= i < 4]
    if missing:
        raise ValueError(
            f'{variant} has four feature levels, F1-F4 (strides 4, 8, 16, 32: out_indices 0 to 3 or -4 to -1), '
            f'not {missing} of out_indices={tuple(indices)}. Hugging Face DETR, Conditional DETR and Deformable '
            f"DETR ask for five with use_timm_backbone=True: pass backbone_config=TimmBackboneConfig(backbone="
            f"'{variant}', out_indices=(1, 2, 3)) instead (docs/usage.md, \"Other detection libraries\")")


#: timm's feature extractors by the names ``features_only`` takes (a name with ``'hook'`` in it is FeatureHookNet).
FEATURE_CLASSES = dict(getter=FeatureGetterNet, hook=FeatureHookNet, fx=FeatureGraphNet, dict=FeatureDictNet,
                       list=FeatureListNet)


def _features(model: MLPClassifier, feature_cls, pretrained: bool, **cfg) -> nn.Module:
    """timm's feature extractor ``feature_cls`` (a name of :data:`FEATURE_CLASSES` or a class) on
    ``model``, loaded first with the pretrained weights when asked. ``'dict'`` and ``'list'`` run
    the backbone as one chain (:func:`backbone_chain`): they call a model's children in turn."""
    if pretrained:
        _load_pretrained(model, model.pretrained_cfg)
    if not isinstance(feature_cls, str):
        return feature_cls(model, **cfg)
    name = 'hook' if 'hook' in feature_cls.lower() else feature_cls.lower()
    if name not in FEATURE_CLASSES:
        raise ValueError(f'feature_cls={feature_cls!r} is not one of timm\'s: {sorted(FEATURE_CLASSES)}')
    if name in ('dict', 'list'):
        cfg.pop('flatten_sequential', None)  # the chain's children are the modules to take maps from
        return FEATURE_CLASSES[name](backbone_chain(model.backbone), **cfg)
    return FEATURE_CLASSES[name](model, **cfg)


def _load_pretrained(model: MLPClassifier, cfg: dict) -> None:
    """timm's ``load_pretrained`` for our models, reading weights-only."""
    source = cfg.get('file') or cfg.get('url')
    if not source:
        raise CheckpointError(f"{cfg.get('architecture')} has no pretrained weights: pass "
                              "pretrained_cfg_overlay=dict(file=PATH) with a checkpoint of this arch")
    state = timm_checkpoint_filter(unwrap_state_dict(read_checkpoint(source, map_location='cpu'), source), model)
    first_conv = cfg.get('first_conv', '') + '.weight'
    if model.in_chans != 3 and first_conv in state:  # timm's way: sum or repeat the RGB filters
        state[first_conv] = adapt_input_conv(model.in_chans, state[first_conv])
    own = model.state_dict()
    own_head = {k: v for k, v in own.items() if k.startswith('head.')}
    file_head = {k: v for k, v in state.items() if k.startswith('head.')}
    if {k: v.shape for k, v in own_head.items()} != {k: v.shape for k, v in file_head.items()}:
        # another classifier (num_classes), or none (num_classes=0): the file's backbone and norm only
        state = {k: v for k, v in state.items() if not k.startswith('head.')}
        state.update(own_head)
    load_state_dict_exactly(model, state, source)


@register_model
def convmlp_s(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('ConvMLP', 's', 'convmlp_s', pretrained, **kwargs)


@register_model
def convmlp_m(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('ConvMLP', 'm', 'convmlp_m', pretrained, **kwargs)


@register_model
def convmlp_l(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('ConvMLP', 'l', 'convmlp_l', pretrained, **kwargs)


@register_model
def pure_mlp_s(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('PureMLP', 's', 'pure_mlp_s', pretrained, **kwargs)


@register_model
def pure_mlp_m(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('PureMLP', 'm', 'pure_mlp_m', pretrained, **kwargs)


@register_model
def pure_mlp_l(pretrained: bool = False, **kwargs) -> MLPClassifier:
    return _create('PureMLP', 'l', 'pure_mlp_l', pretrained, **kwargs)
