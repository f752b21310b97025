"""Our classes are found wherever users look: mmdet, mmseg, mmpretrain registries and timm."""
import subprocess
import sys

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


CUSTOM_IMPORTS = "custom_imports = dict(imports=['convmlp_mm'], allow_failed_imports=False)\n"
RETINANET = """_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
model = dict(backbone=dict(_delete_=True, type='ConvMLP', arch='s', out_indices=(1, 2, 3)),
             neck=dict(in_channels=[128, 256, 512]))
"""
BUILD = """import sys
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
assert 'convmlp_mm' not in sys.modules
cfg = Config.fromfile('retinanet_convmlp.py')
register_all_modules()
try:
    model = MODELS.build(cfg.model)
except KeyError as error:
    sys.exit(f'KeyError: {error}')
backbone = type(model.backbone)
print(backbone.__module__, backbone.__name__, model.backbone.out_channels, model.neck.in_channels)
"""


@pytest.mark.slow  # a fresh interpreter
@pytest.mark.parametrize('custom_imports', [True, False], ids=['with_the_line', 'without'])
def test_custom_imports_in_a_config_file_registers_the_plugin(custom_imports, tmp_path):
    """An mmdet config file with the README's ``custom_imports`` line, read by mmengine's
    ``Config.fromfile`` (which does the imports) and built by mmdet's registry, in a fresh process
    whose code imports nothing of ours: the backbone is ours. Without the line mmdet does not know it."""
    (tmp_path / 'retinanet_convmlp.py').write_text((CUSTOM_IMPORTS if custom_imports else '') + RETINANET)
    (tmp_path / 'build.py').write_text(BUILD)
    proc = subprocess.run([sys.executable, 'build.py'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if custom_imports:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[-1] == 'convmlp_mm.mm ConvMLP (128, 256, 512) [128, 256, 512]'
    else:
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1].startswith("KeyError: 'ConvMLP is not in the mmdet::model registry."), \
            proc.stderr[-3000:]


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


def _saved_backbone(tmp_path, prefix='backbone.'):
    source = convmlp_mm.ConvMLP('s')
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': {prefix + k: v for k, v in source.state_dict().items()}}, path)
    return path, source.state_dict()


@pytest.mark.parametrize('name', ['ConvMLP', 'PureMLP'])
def test_pretrained_argument_is_a_deprecated_pretrained_init_cfg(name, tmp_path):
    from mmseg.registry import MODELS
    family = getattr(convmlp_mm, name)
    source = family('s')
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}}, path)
    with pytest.warns(DeprecationWarning, match='pretrained is deprecated; use init_cfg'):
        model = MODELS.build(dict(type=f'convmlp_mm.{name}', arch='s', pretrained=path))
    assert model.init_cfg == dict(type='Pretrained', checkpoint=path)
    model.init_weights()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items())
    with pytest.raises(ValueError, match=r"pretrained='x.pth' and init_cfg=.* are both given: set one"):
        family('s', pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint=path))


def test_pretrained_init_cfg_honours_prefix_and_map_location(tmp_path):
    path, state = _saved_backbone(tmp_path, prefix='model.backbone.')
    seen = []
    model = convmlp_mm.ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='model.backbone.',
                                                  map_location=lambda storage, loc: seen.append(loc) or storage))
    model.init_weights()
    assert seen and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match=r"unknown keys \['strict'\]; allowed are \['type', 'checkpoint', 'prefix'"):
        convmlp_mm.ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=path, strict=False))


def test_norm_cfg_goes_through_mmcvs_registry():
    from mmengine.registry import MODELS
    import torch.nn as nn

    class TokenNorm(nn.GroupNorm):
        def __init__(self, num_features, **kwargs):
            super().__init__(1, num_features, **kwargs)
    MODELS.register_module('TestTokenNorm', module=TokenNorm, force=True)
    try:
        model = convmlp_mm.ConvMLP('s', norm_cfg=dict(type='TestTokenNorm'))
        assert type(model.tokenizer.block[1]) is TokenNorm
        gn = convmlp_mm.PureMLP('s', norm_cfg=dict(type='GN', num_groups=4, requires_grad=False))
        assert type(gn.tokenizer.block[1]) is nn.GroupNorm and not gn.tokenizer.block[1].weight.requires_grad
    finally:
        MODELS._module_dict.pop('TestTokenNorm')
    with pytest.raises(ValueError, match="norm_cfg=.*'NoSuchNorm'.* is invalid"):
        convmlp_mm.ConvMLP('s', norm_cfg=dict(type='NoSuchNorm'))
