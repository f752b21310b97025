"""Our classes are found wherever users look: mmdet, mmseg, mmpretrain registries and timm."""
import pytest
import torch

import convmlp_mm  # noqa: F401  (registers)


@pytest.mark.parametrize('library', ['mmdet', 'mmseg', 'mmpretrain'])
@pytest.mark.parametrize('name', ['ConvMLP', 'PureMLP'])
def test_registered_into_host_registries(library, name):
    from mmengine.registry import DefaultScope
    registry = __import__(f'{library}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(library):  # as in a config of that library
        model = registry.build(dict(type=name, arch='s', out_indices=(3, )))
    assert type(model).__name__ == name and model.out_channels == (512, )


def test_cross_library_type_from_another_scope():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(dict(type='mmdet.ConvMLP', arch='m'))
    assert type(model).__name__ == 'ConvMLP'


def test_custom_imports_in_a_config_registers_the_plugin():
    from mmengine.config import Config
    cfg = Config(dict(custom_imports=dict(imports=['convmlp_mm'], allow_failed_imports=False)))
    assert cfg.custom_imports.imports == ['convmlp_mm']


@pytest.mark.parametrize('name, channels', [('convmlp_s', [64, 128, 256, 512]), ('convmlp_l', [96, 192, 384, 768]),
                                            ('pure_mlp_m', [64, 128, 256, 512])])
def test_timm_features_only(name, channels):
    import timm
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.rand(1, 3, 96, 64))
    assert [tuple(f.shape) for f in feats] == [(1, c, 96 // r, 64 // r) for c, r in zip(channels, [4, 8, 16, 32])]


def test_timm_pretrained_cfg_names_the_published_files():
    import timm
    for arch in 'sml':
        cfg = timm.create_model(f'convmlp_{arch}').pretrained_cfg
        assert cfg['url'] == f'https://shi-labs.com/projects/convmlp/checkpoints/convmlp_{arch}_imagenet.pth'
    assert timm.create_model('pure_mlp_s', num_classes=10)(torch.rand(1, 3, 64, 64)).shape == (1, 10)
