"""timm entry points: ``timm.create_model('convmlp_s')`` (and m, l, pure_mlp_s/m/l).

``features_only=True`` gives F1-F4 through :meth:`MLPClassifier.forward_intermediates`;
``pretrained=True`` downloads the published ImageNet weights named in ``default_cfgs``
(ConvMLP only: Pure-MLP has no published weights). Imported only when timm is installed.
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .classifier import MLPClassifier, timm_checkpoint_filter

PUBLISHED_URL = 'https://shi-labs.com/projects/convmlp/checkpoints/convmlp_{}_imagenet.pth'


def _cfg(url: str = '') -> dict:
    return dict(url=url, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv='backbone.tokenizer.block.0', classifier='head')


default_cfgs = generate_default_cfgs({
    **{f'convmlp_{a}.in1k': _cfg(PUBLISHED_URL.format(a)) for a in 'sml'},
    **{f'pure_mlp_{a}': _cfg() for a in 'sml'},
})


def _create(backbone: str, arch: str, variant: str, pretrained: bool, **kwargs) -> MLPClassifier:
    return build_model_with_cfg(MLPClassifier, variant, pretrained, backbone=backbone, arch=arch,
                                pretrained_filter_fn=timm_checkpoint_filter,
                                feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)


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
