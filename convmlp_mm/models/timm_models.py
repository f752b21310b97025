"""timm entry points: ``timm.create_model('convmlp_s')`` (and m, l, pure_mlp_s/m/l).

``features_only=True`` gives F1-F4 through :meth:`MLPClassifier.forward_intermediates`;
``pretrained=True`` downloads the published ImageNet weights named in ``default_cfgs``
(ConvMLP only: Pure-MLP has no published weights), or reads
``pretrained_cfg_overlay=dict(file=PATH)``, weights-only with torch alone
(:func:`~convmlp_mm.models.weights.read_checkpoint`); with another ``num_classes`` the classifier
stays freshly initialised (none with ``num_classes=0``), and ``features_only`` models take the
backbone's weights (timm's feature wrapper has pruned the head). Imported only when timm is installed.
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import adapt_input_conv

from .classifier import MLPClassifier, timm_checkpoint_filter
from .weights import HEAD_PREFIXES, CheckpointError, load_state_dict_exactly, read_checkpoint, unwrap_state_dict

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
    features_only = kwargs.get('features_only', False)
    model = build_model_with_cfg(MLPClassifier, variant, False, backbone=backbone, arch=arch,
                                 feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)
    if pretrained:
        _load_pretrained(model.model if features_only else model, model.pretrained_cfg, features_only)
    return model


def _load_pretrained(model, cfg: dict, features_only: bool) -> None:
    """timm's ``load_pretrained`` for our models, reading weights-only. ``model`` is the classifier,
    or for ``features_only`` the one inside timm's feature wrapper, whose head and final norm
    timm may have pruned: those keys of the file are then not loaded."""
    source = cfg.get('file') or cfg.get('url')
    if not source:
        raise CheckpointError(f"{cfg.get('architecture')} has no pretrained weights: pass "
                              "pretrained_cfg_overlay=dict(file=PATH) with a checkpoint of this arch")
    state = timm_checkpoint_filter(unwrap_state_dict(read_checkpoint(source, map_location='cpu'), source), model)
    first_conv = cfg.get('first_conv', '') + '.weight'
    if model.in_chans != 3 and first_conv in state:  # timm's way: sum or repeat the RGB filters
        state[first_conv] = adapt_input_conv(model.in_chans, state[first_conv])
    own = model.state_dict()
    if features_only:  # timm's feature wrapper pruned the head (and maybe the final norm)
        state = {k: v for k, v in state.items() if k in own or not k.startswith(HEAD_PREFIXES)}
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
