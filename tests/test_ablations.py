"""Table 2's ablations as arch switches of one ConvMLP: the paper's numbers, shapes, gradients,
Pure-MLP as an entry, the reconstructed conv_v1 stage, and the switch checks."""
import hashlib
import math
import os.path as osp
import sys

import pytest
import torch

from convmlp_mm import ConvMLP, MLPClassifier, PureMLP
from convmlp_mm.analysis import count_macs
from convmlp_mm.models.convmlp import ConvStageV1

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Table 2: (stem_stage, downsample, dwconv), params (M, 1000-class head), GMACs.
TABLE2 = {
    'table2-row1': (('mlp', 'patch_merging', False), 7.88, 1.47),
    'table2-row2': (('conv_v1', 'patch_merging', False), 7.89, 1.59),
    'table2-row3': (('conv_v1', 'conv', False), 8.71, 1.65),
    'table2-row4': (('conv_v1', 'patch_merging', True), 7.91, 1.59),
    'table2-row5': (('conv_v1', 'conv', True), 8.73, 1.65),
    'table2-row6': (('conv_v1', 'conv', True), 8.73, 1.65),
    'table2-row7': (('conv', 'conv', True), 9.02, 2.40),
}
ROWS = list(TABLE2)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('row', ROWS)
def test_table2_row_has_the_papers_switches_params_and_gmacs(row):
    switches, params_m, gmacs = TABLE2[row]
    model = MLPClassifier('ConvMLP', row)
    cfg = model.backbone.arch_cfg
    assert (cfg['stem_stage'], cfg['downsample'], cfg['dwconv']) == switches
    assert round(n_params(model) / 1e6, 2) == params_m
    assert round(count_macs(model, (torch.rand(1, 3, 224, 224), ))['ptflops-2021'] / 1e9, 2) == gmacs


def test_ptflops_2021_convention_gives_the_measured_totals():
    """ConvMLP-S 2.397 G and Pure-MLP-S 1.4685 G (measured with ptflops' 2021 rules)."""
    x = (torch.rand(1, 3, 224, 224), )
    assert abs(count_macs(MLPClassifier('ConvMLP', 's'), x)['ptflops-2021'] / 1e9 - 2.397) < 0.0005
    assert abs(count_macs(MLPClassifier('PureMLP', 's'), x)['ptflops-2021'] / 1e9 - 1.4685) < 0.0005


def test_conv_v1_is_the_reconstruction_of_table2():
    stage = ConvStageV1(64, 128)
    assert n_params(stage) == 110_976
    kinds = [type(m).__name__ for m in stage]
    assert kinds == ['Conv2d', 'BatchNorm2d', 'ReLU', 'Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d']
    assert all(m.bias is None for m in stage if isinstance(m, torch.nn.Conv2d))
    assert tuple(stage.eval()(torch.rand(1, 64, 56, 56)).shape) == (1, 128, 28, 28)


@pytest.mark.parametrize('row', ROWS)
@pytest.mark.parametrize('size', [(161, 227), (33, 47)])
def test_every_row_gives_f1_to_f4_at_exact_shapes(row, size):
    model = ConvMLP(row).eval()
    with torch.no_grad():
        feats = model(torch.rand(1, 3, *size))
    h, w = math.ceil(math.ceil(size[0] / 2) / 2), math.ceil(math.ceil(size[1] / 2) / 2)
    expected = []
    for c in (64, 128, 256, 512):
        expected.append((1, c, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert [tuple(f.shape) for f in feats] == expected


@pytest.mark.parametrize('row', ['table2-row2', 'table2-row3', 'table2-row4'])
def test_every_parameter_of_a_row_gets_a_gradient(row):
    model = ConvMLP(row, drop_path_rate=0.).train()
    sum(f.square().mean() for f in model(torch.rand(2, 3, 37, 45))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize('row', ROWS)
def test_frozen_stem_stage_freezes_the_stem_of_every_row(row):
    model = ConvMLP(row, frozen_stages=1).train()
    stem = model.conv_stages if model.conv_stages is not None else model.stages[0]
    assert all(not p.requires_grad for p in stem.parameters())
    assert all(p.requires_grad for p in model.stages[-1].parameters())


#: sha256 of the sorted "key shape" lines of PureMLP('s') and ConvMLP('s') state dicts of the
#: releases before the switches (computed from that code): today's checkpoints keep loading.
LAYOUT_SHA256 = {
    'PureMLP': 'e7928ef3c7eb7cd03d47d86165937558890a741a2d2985ffc3496d7740344006',
    'ConvMLP': '3aee8f1acb3b8e5b84a8fff2790512f1e60daf9fd19afbcb77604526fbfcf333',
}


def layout_digest(model):
    lines = sorted(f'{k} {tuple(v.shape)}' for k, v in model.state_dict().items())
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()


@pytest.mark.parametrize('name', ['PureMLP', 'ConvMLP'])
def test_state_dict_layouts_are_unchanged(name):
    assert layout_digest({'PureMLP': PureMLP, 'ConvMLP': ConvMLP}[name]('s')) == LAYOUT_SHA256[name]


def test_pure_mlp_is_convmlp_with_the_switches_off():
    pure = PureMLP('s')
    assert isinstance(pure, ConvMLP) and type(pure).forward is ConvMLP.forward
    same = ConvMLP('pure-mlp-s')
    assert same.arch_cfg == pure.arch_cfg
    same.load_state_dict(pure.state_dict())  # the same layout, strictly
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(pure.eval()(x), same.eval()(x)):
            assert torch.equal(a, b)


def test_custom_dict_takes_the_published_switches_by_default():
    sizes = dict(channels=64, conv_blocks=2, depths=(2, 4, 2), dims=(128, 256, 512), mlp_ratio=2)
    assert n_params(ConvMLP(sizes)) == n_params(ConvMLP('s'))
    assert ConvMLP(dict(sizes, dwconv=False)).arch_cfg['dwconv'] is False
    assert PureMLP(sizes).arch_cfg['stem_stage'] == 'mlp'


@pytest.mark.parametrize('cls, key, value, message', [
    (ConvMLP, 'stem_stage', 'resnet',
     "arch['stem_stage']='resnet' is invalid: expected one of ['conv', 'conv_v1', 'mlp']"),
    (ConvMLP, 'downsample', 'pool', "expected one of ['conv', 'patch_merging']"),
    (ConvMLP, 'dwconv', 1, "arch['dwconv']=1 is invalid: expected one of [True, False]"),
    (PureMLP, 'dwconv', True, "arch['dwconv']=True is invalid: expected one of [False]"),
    (ConvMLP, 'stem', 'conv', "unknown keys ['stem']"),
])
def test_bad_switches_fail_naming_key_value_and_choices(cls, key, value, message):
    sizes = dict(channels=64, conv_blocks=2, depths=(2, 4, 2), dims=(128, 256, 512), mlp_ratio=2)
    with pytest.raises(ValueError) as error:
        cls(dict(sizes, **{key: value}))
    assert message in str(error.value)


@pytest.mark.slow  # starts a process or trains
def test_complexity_tool_prints_table2():
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/analysis/complexity.py'), '--table2'], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row, (_, params_m, gmacs) in TABLE2.items():
        line = next(text for text in out.splitlines() if text.startswith(f'| {row[-1]} '))
        assert f'| {params_m:.2f} | {params_m:.2f} |' in line and f'| {gmacs:.2f} |' in line, line
