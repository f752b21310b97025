"""ConvMLP and Pure-MLP backbones: numbers of the paper, shapes, gradients, arguments."""
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from convmlp_mm import ConvMLP, MLPClassifier, PureMLP, models

FAMILIES = [ConvMLP, PureMLP]
ARCHS = ['s', 'm', 'l']
CHANNELS = {'s': (64, 128, 256, 512), 'm': (64, 128, 256, 512), 'l': (96, 192, 384, 768)}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch, backbone, with_head', [
    ('s', 8_508_896, 9_022_920), ('m', 16_896_480, 17_410_504), ('l', 41_957_904, 42_728_440)])
def test_convmlp_parameter_counts_are_the_published_ones(arch, backbone, with_head):
    assert n_params(ConvMLP(arch)) == backbone
    assert n_params(MLPClassifier('ConvMLP', arch)) == with_head


@pytest.mark.parametrize('arch, backbone_m', [('s', 7.36), ('m', 15.66), ('l', 39.19)])
def test_pure_mlp_parameter_counts_match_the_paper(arch, backbone_m):
    assert abs(n_params(PureMLP(arch)) / 1e6 - backbone_m) < 0.1
    if arch == 's':  # Table 2, first row: 7.88 M with the 1000-class head
        assert abs(n_params(MLPClassifier('PureMLP', 's')) / 1e6 - 7.88) < 0.01


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [(224, 224), (161, 227), (33, 33)])
def test_feature_shapes_channels_strides(family, arch, size):
    model = family(arch).eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, *size))
    h, w = size
    expected = []
    for _ in range(2):  # the tokenizer's two stride-2 steps
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    for c in CHANNELS[arch]:
        expected.append((2, c, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert [tuple(f.shape) for f in feats] == expected
    assert all(f.is_contiguous() for f in feats)
    assert model.out_channels == CHANNELS[arch] and model.out_strides == (4, 8, 16, 32)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('arch', ARCHS)
def test_every_parameter_gets_a_gradient(family, arch):
    model = family(arch, drop_path_rate=0.).train()
    loss = sum(f.square().mean() for f in model(torch.rand(2, 3, 37, 45)))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize('family', FAMILIES)
def test_with_cp_keeps_outputs_and_gradients(family):
    torch.manual_seed(0)
    plain = family('s', drop_path_rate=0.).train()
    ckpt = family('s', drop_path_rate=0., with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 48)
    outs = []
    for model in (plain, ckpt):
        feats = model(x)
        sum(f.sum() for f in feats).backward()
        outs.append((feats, {n: p.grad for n, p in model.named_parameters()}))
    for a, b in zip(outs[0][0], outs[1][0]):
        torch.testing.assert_close(a, b)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(grad, outs[1][1][name], msg=name)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('frozen', [0, 1, 2, 3])
def test_frozen_stages_get_no_gradient_and_keep_bn_statistics(family, frozen):
    model = family('s', frozen_stages=frozen).train()
    frozen_modules = [m for stage in model.feature_stages[:frozen + 1] for m in stage]
    frozen_ids = {id(p) for m in frozen_modules for p in m.parameters()}
    bn_before = {k: v.clone() for m in frozen_modules for k, v in m.state_dict().items() if 'running' in k}
    loss = sum(f.sum() for f in model(torch.rand(2, 3, 64, 64)))
    if loss.requires_grad:  # with frozen_stages=3 nothing trains
        loss.backward()
    for p in model.parameters():
        assert (p.grad is None) == (id(p) in frozen_ids)
    assert all(not m.training for fm in frozen_modules for m in fm.modules())
    after = {k: v for m in frozen_modules for k, v in m.state_dict().items() if 'running' in k}
    for key, value in bn_before.items():
        torch.testing.assert_close(value, after[key])


def test_norm_eval_keeps_batchnorm_in_eval_mode():
    model = ConvMLP('s', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert model.stages[0].training


@pytest.mark.parametrize('out_indices, expected', [((0, 1, 2, 3), (0, 1, 2, 3)), ((-1, ), (3, )),
                                                   ([1, -1], (1, 3)), (2, (2, ))])
def test_out_indices(out_indices, expected):
    model = ConvMLP('s', out_indices=out_indices).eval()
    feats = model(torch.rand(1, 3, 64, 64))
    assert model.out_indices == expected
    assert [f.shape[1] for f in feats] == [CHANNELS['s'][i] for i in expected]


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='xl'), "arch='xl' is not a ConvMLP arch"),
    (dict(arch=dict(channels=64)), 'missing keys'),
    (dict(arch=dict(channels=64, conv_blocks=2, depths=(2, 4), dims=(128, 256, 512), mlp_ratio=2)),
     "arch['depths']=(2, 4) is invalid"),
    (dict(arch=dict(channels=64, conv_blocks=2, depths=(2, 4, 2), dims=(128, 256, 512), mlp_ratio=2, x=1)),
     'unknown keys'),
    (dict(out_indices=(4, )), 'out_indices=(4,) has [4] out of range'),
    (dict(out_indices=(-5, )), 'out of range'),
    (dict(out_indices=()), 'out_indices=() is invalid'),
    (dict(out_indices=(1, -3)), 'same feature map twice'),
    (dict(frozen_stages=4), 'frozen_stages=4 is invalid'),
    (dict(frozen_stages=-2), 'frozen_stages=-2 is invalid'),
])
@pytest.mark.parametrize('family', FAMILIES)
def test_bad_arguments_fail_at_construction(family, kwargs, message):
    with pytest.raises(ValueError) as error:
        family(**kwargs)
    assert message.replace('ConvMLP', family.__name__) in str(error.value)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('x, message', [
    (torch.rand(3, 64, 64), r'\(3, 64, 64\) is invalid: expected an N x 3 x H x W tensor'),
    (torch.rand(1, 1, 64, 64), r'\(1, 1, 64, 64\) is invalid: expected an N x 3 x H x W tensor'),
    (torch.rand(1, 4, 64, 64), r'\(1, 4, 64, 64\) is invalid: expected an N x 3 x H x W tensor'),
    (torch.rand(1, 3, 31, 64), r'\(1, 3, 31, 64\) is too small: height and width must be at least 32'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 'dtype torch.uint8 is invalid: expected a floating-point'),
])
def test_bad_input_fails_with_its_shape(family, x, message):
    with pytest.raises(ValueError, match=message):
        family('s')(x)


@pytest.mark.parametrize('arch', ['s', 'pure-mlp-s', 'table2-row2', 'table2-row4'])
def test_feature_modules_output_the_maps(arch):
    """F1-F4 are outputs of the modules feature_modules names (forward hooks, module-name extractors)."""
    model = ConvMLP(arch).eval()
    hooked = {}
    for name in model.feature_modules:
        model.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: hooked.setdefault(name, out))
    with torch.no_grad():
        maps = model(torch.rand(1, 3, 65, 97))
    assert [torch.equal(hooked[name], f) for name, f in zip(model.feature_modules, maps)] == [True] * 4


@pytest.mark.parametrize('family', FAMILIES)
def test_arch_aliases_and_custom_dict(family):
    assert n_params(family('small')) == n_params(family('S'))
    custom = dict(channels=32, conv_blocks=1, depths=(1, 1, 1), dims=(48, 64, 96), mlp_ratio=1.5)
    feats = family(custom).eval()(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [32, 48, 64, 96]


@pytest.mark.parametrize('name', ['ConvMLP', 'PureMLP'])
def test_pretrained_init_cfg_without_checkpoint_fails_at_construction(name):
    mm = pytest.importorskip('convmlp_mm.mm')
    with pytest.raises(ValueError, match="no 'checkpoint'"):
        getattr(mm, name)('s', init_cfg=dict(type='Pretrained'))


def test_published_drop_path_schedule():
    model = ConvMLP('m')
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in model.stages[1].blocks]
    assert rates == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1])


#: The torch-only models (norm layers from torch; the registered ones build them through mmcv).
TORCH_FAMILIES = [models.ConvMLP, models.PureMLP]


@pytest.mark.parametrize('family', TORCH_FAMILIES)
@pytest.mark.parametrize('norm_cfg, kind', [(dict(type='BN'), nn.BatchNorm2d), (dict(type='SyncBN'), nn.SyncBatchNorm),
                                            (dict(type='GN', num_groups=8), nn.GroupNorm),
                                            (dict(type='BN', requires_grad=False), nn.BatchNorm2d)])
def test_norm_cfg_builds_the_conv_norms_with_the_published_keys(family, norm_cfg, kind):
    model = family('s', norm_cfg=norm_cfg)
    norms = [m for m in model.tokenizer.modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))]
    assert len(norms) == 3 and all(isinstance(m, kind) for m in norms)
    keys = [k for k in model.state_dict() if 'running' not in k and 'num_batches' not in k]
    assert keys == [k for k in family('s').state_dict() if 'running' not in k and 'num_batches' not in k]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_norms = norm_cfg.get('requires_grad') is False
    assert ('tokenizer.block.1.weight' in trainable) != frozen_norms and 'stages.0.blocks.0.norm1.weight' in trainable
    if family is models.ConvMLP:
        assert isinstance(model.conv_stages.conv_blocks[0][1], kind)
    model.train()
    model(torch.rand(2, 3, 64, 64))  # SyncBN outside a process group computes as BatchNorm


@pytest.mark.parametrize('norm_cfg, match', [(dict(type='XN'), "type 'XN' is not one of"),
                                             (dict(type='GN'), 'invalid for GroupNorm'),
                                             ('BN', "expected a dict with a 'type'")])
def test_a_bad_norm_cfg_is_one_clear_error(norm_cfg, match):
    with pytest.raises(ValueError, match=match):
        models.ConvMLP('s', norm_cfg=norm_cfg)


@pytest.mark.parametrize('family', TORCH_FAMILIES)
def test_pretrained_and_prefix_load_the_backbone(family, tmp_path):
    source = family('s').eval()
    path = str(tmp_path / 'det.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}}, path)
    loaded = family('s', pretrained=path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())
    other = family('s')
    torch.save({'teacher.' + k: v for k, v in source.state_dict().items()}, str(tmp_path / 'distill.pth'))
    other.load_pretrained(str(tmp_path / 'distill.pth'), prefix='teacher')
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in source.state_dict().items())
    from convmlp_mm.models.weights import CheckpointError
    with pytest.raises(CheckpointError, match=r"no key under prefix 'student\.': its keys start with teacher\."):
        other.load_pretrained(str(tmp_path / 'distill.pth'), prefix='student.')
