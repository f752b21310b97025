"""The fast ConvMLP keeps the published numerics; fusion keeps outputs; the benchmark runs."""
import json
import os.path as osp
import sys
from functools import partial

import pytest
import torch

from convmlp_mm import ConvMLP, PureMLP, fuse
from published_convmlp import randomised
from toy import randomise_norms

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('arch', ['s', 'l'])
def test_same_features_and_gradients_as_the_published_layout(arch):
    reference = randomised(arch)
    model = ConvMLP(arch, drop_path_rate=0.)
    model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith(('norm.', 'head.'))})
    model.eval()
    x = torch.rand(1, 3, 130, 98)
    ours, theirs = model(x), reference.forward_taps(x)[0]
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) < 1e-4
    sum((f * torch.linspace(0, 1, f.numel()).view_as(f)).sum() for f in ours).backward()
    sum((f * torch.linspace(0, 1, f.numel()).view_as(f)).sum() for f in theirs).backward()
    grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        assert rel_err(param.grad, grads[name].grad) < 1e-4, name


@pytest.mark.parametrize('arch', ['s', 'm'])
def test_training_step_gives_the_published_layouts_gradients(arch):
    """Training mode (NCHW convolutions, BatchNorm on batch statistics) against the published
    layout in training mode: the same maps, the same gradients of every parameter (1e-4)."""
    reference = randomised(arch).train()
    model = ConvMLP(arch, drop_path_rate=0.).train()
    model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith(('norm.', 'head.'))})
    x = torch.rand(2, 3, 98, 130)
    ours, theirs = model(x), reference.forward_taps(x)[0]
    weights = [torch.linspace(-1, 1, f.numel()).view_as(f) for f in theirs]
    sum((f * w).sum() for f, w in zip(ours, weights)).backward()
    sum((f * w).sum() for f, w in zip(theirs, weights)).backward()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) < 1e-4
    grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        assert param.grad is not None and rel_err(param.grad, grads[name].grad) < 1e-4, name
    for name, buffer in model.named_buffers():  # the same running statistics after the step
        assert torch.allclose(buffer.float(), reference.state_dict()[name].float(), atol=1e-5), name


@pytest.mark.parametrize('family', [ConvMLP, PureMLP])
def test_fuse_keeps_outputs(family):
    model = randomise_norms(family('s')).eval()
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        expected = model(x)
        fused = fuse(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(fused, expected):
        assert rel_err(a, b) < 1e-5


def test_fuse_needs_eval_mode():
    with pytest.raises(ValueError, match='eval mode'):
        fuse(ConvMLP('s'))


@pytest.mark.slow  # torch.compile
def test_compiled_backbone_matches():
    model = ConvMLP('s').eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(torch.compile(model)(x), model(x)):
            assert rel_err(a, b) < 1e-4


@pytest.mark.slow  # starts a process or trains
@pytest.mark.stack_independent('the benchmark is a development tool run on the newest stack; its model paths '
                               '(prepared, bf16, ONNX) are tested on both')
def test_benchmark_quick_smoke(tmp_path):
    """The CI form of tools/benchmark.py: every section, with the precisions of the GPU table
    (fp16 where CPU autocast has it) measured on the CPU."""
    from convmlp_mm.compat import CPU_AUTOCAST_DTYPES, CPU_NATIVE_BF16
    out = tmp_path / 'bench.json'
    extra = ['bf16'] + (['fp16'] if torch.float16 in CPU_AUTOCAST_DTYPES else [])
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/benchmark.py'), '--quick', '--out', str(out),
                              '--precisions', *extra, '--repeats', '1'], tmp_path)  # a smoke run: one timing each
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    report = json.load(open(out))
    sections = {r['section'] for r in report['rows']}
    assert sections == {'forward', 'train step', 'inference', 'tensor outputs, pytorch', 'tensor outputs, onnxruntime',
                        'ddp train step, 2 processes', 'scaling', 'forward, default allocator',
                        'scaling, default allocator'}
    emulated = ('fp16',) if CPU_NATIVE_BF16 else ('fp16', 'bf16')  # no peak measured, none set against
    assert set(report['matmul_peak_gflops']) == {'fp32', *extra} - set(emulated)
    assert min(report['matmul_peak_gflops'].values()) > 0
    precisions = {(r['section'], r['precision']) for r in report['rows']}
    for d in extra:
        assert {('forward', f'{d} autocast'), ('forward', f'{d} weights, prepared'), ('train step', f'{d} autocast'),
                ('inference', f'{d} autocast, prepared')} <= precisions
    assert ('inference', 'fp32, prepared') in precisions
    rows = [r for r in report['rows'] if 'of_peak' in r]
    assert rows and all(0 < r['of_peak'] for r in rows)
    assert not [r for r in rows if r['precision'].startswith(emulated)]
    summary = report['summary']
    assert {'forward_over_published_128x192', 'train_step_over_published_128x128',
            'bf16_weights_forward_over_fp32_128x128', 'bf16_train_step_over_fp32_128x128',
            'retinanet_convmlp-s_fpn_1x_coco onnxruntime over pytorch'} <= set(summary)
    assert '| section | model | precision |' in text and '| ratio | value |' in text


@pytest.mark.slow  # a spawned process
def test_benchmark_measurements_start_in_spawned_processes():
    """What --device cuda does (the CPU here, with --start-method spawn): each measurement's work
    and arguments are pickled into a fresh process."""
    import benchmark
    benchmark.START_METHOD['method'] = 'spawn'
    try:
        result = benchmark.measure(partial(benchmark.backbone, 'convmlp-s'), (1, 3, 64, 64), repeats=1)
    finally:
        benchmark.START_METHOD.clear()
    assert result['seconds'] > 0 and result['peak_mib'] == result['peak_mib']
