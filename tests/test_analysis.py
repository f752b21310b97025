"""MAC counts of the paper, and the complexity and conversion tools."""
import os.path as osp
import sys

import pytest
import torch

from convmlp_mm import MLPClassifier, mmpretrain_to_published
from convmlp_mm.analysis import count_macs
from published_convmlp import randomised

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.parametrize('family, arch, gmacs', [('ConvMLP', 's', 2.385), ('ConvMLP', 'm', 3.929),
                                                 ('ConvMLP', 'l', 9.870), ('PureMLP', 's', 1.463)])
def test_macs_at_224(family, arch, gmacs):
    macs = count_macs(MLPClassifier(family, arch), (torch.rand(1, 3, 224, 224), ))
    assert macs['conv+linear'] / 1e9 == pytest.approx(gmacs, abs=5e-4)
    assert macs['all'] > macs['conv+linear']


@pytest.mark.slow  # starts a process or trains
@pytest.mark.stack_independent('the tool around count_macs, which runs on torch 2.1 in test_analysis and '
                               'test_ablations')
def test_complexity_tool_on_a_config_at_a_shape():
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/analysis/complexity.py'),
                              osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_convmlp-s_fpn_1x_coco.py'),
                              '--shape', '96', '128'],
                             ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    (line, ) = [line for line in out.splitlines() if line.startswith('| mask-rcnn_convmlp-s')]
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[1] == '96x128' and cells[3] == '28.66' and float(cells[4]) > 0


@pytest.mark.slow  # starts a process or trains
@pytest.mark.stack_independent('a key mapping in a subprocess; the converter functions run on both stacks in '
                               'test_checkpoints')
def test_convert_tool_round_trip(tmp_path):
    reference = randomised('s')
    src, mid, back = tmp_path / 'pub.pth', tmp_path / 'mm.pth', tmp_path / 'back.pth'
    torch.save(reference.state_dict(), src)
    tool = osp.join(ROOT, 'tools/convert_checkpoint.py')
    for args in ([src, mid], [mid, back, '--to', 'published']):
        result = tool_runner.run([sys.executable, tool, *args], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    converted = torch.load(mid, weights_only=False)['state_dict']
    assert mmpretrain_to_published(converted).keys() == reference.state_dict().keys()
    restored = torch.load(back)
    assert restored.keys() == reference.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in reference.state_dict().items())
