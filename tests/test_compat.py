"""Feature detection (convmlp_mm.compat) on this torch, and the CPU parts of the engine layer
(process group, DDP wrapper, per-process BatchNorm, AMP wrapper), each on the code path that
breaks without it."""
import os
import os.path as osp

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner
import tool_runner
from toy import ToyDataset, ToyModel, experiment_name

import convmlp_mm  # noqa: F401  (registers the runtime parts)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def toy_runner(work_dir, max_iters, resume=False):
    return Runner(model=ToyModel(), experiment_name=experiment_name(), work_dir=str(work_dir), resume=resume,
                  train_dataloader=dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=True),
                                        batch_size=2, num_workers=0),
                  optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
                  param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=False),
                  train_cfg=dict(by_epoch=False, max_iters=max_iters),
                  default_hooks=dict(checkpoint=dict(type=CheckpointHook, interval=2, by_epoch=False)),
                  custom_hooks=[dict(type='SafeCheckpointLoadHook')],
                  randomness=dict(seed=0), env_cfg=dict(dist_cfg=dict(backend='nccl')))


@pytest.mark.slow  # a runner trains
def test_runner_resumes_a_checkpoint_hook_checkpoint(tmp_path):
    """SafeCheckpointLoadHook: the checkpoint holds message_hub's HistoryBuffer and numpy objects."""
    toy_runner(tmp_path, max_iters=2).train()
    checkpoint = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    assert 'message_hub' in checkpoint and 'meta' in checkpoint
    runner = toy_runner(tmp_path, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    steps = {int(state['step']) for state in runner.optim_wrapper.optimizer.state.values()}
    assert steps == {4}  # AdamW's state came back from the checkpoint


def _worker(rank, world_size, port, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import MODEL_WRAPPERS

    from convmlp_mm.engine import init_cpu_process_group
    outcome = {}
    try:  # launcher='pytorch' without a GPU: gloo
        outcome['init'] = init_cpu_process_group('pytorch') and torch.distributed.get_backend()
    except Exception as error:  # reported to the parent test
        outcome['init'] = repr(error)
        results[rank] = outcome
        return
    model = nn.Sequential(nn.Conv2d(3, 4, 3), build_norm_layer(dict(type='SyncBN'), 4)[1])
    try:  # Runner.wrap_model passes device_ids
        ddp = MODEL_WRAPPERS.build(dict(type='CPUDistributedDataParallel', module=model, device_ids=[rank]))
        outcome['ddp'] = 'ok'
    except Exception as error:
        outcome['ddp'] = repr(error)
        results[rank] = outcome
        return
    try:  # SyncBN in CPU DDP: per-process BatchNorm, the same parameter names
        ddp(torch.rand(2, 3, 8, 8)).sum().backward()
        outcome['syncbn'] = sorted(ddp.module.state_dict()) == sorted(model.state_dict()) and 'ok'
    except Exception as error:
        outcome['syncbn'] = repr(error)
    torch.distributed.destroy_process_group()
    results[rank] = outcome


@pytest.fixture(scope='module')
def distributed_outcome():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, tool_runner.free_port(), results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.slow  # two processes
@pytest.mark.xdist_group('cpu-ddp')  # one 2-process run for the three
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU process group is for machines without a GPU')
def test_cpu_process_group_uses_gloo(distributed_outcome):
    assert [distributed_outcome[r]['init'] for r in (0, 1)] == ['gloo', 'gloo']


@pytest.mark.slow  # two processes
@pytest.mark.xdist_group('cpu-ddp')  # one 2-process run for the three
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU process group is for machines without a GPU')
def test_cpu_ddp_wrapper_accepts_device_ids(distributed_outcome):
    assert [distributed_outcome[r]['ddp'] for r in (0, 1)] == ['ok', 'ok']


@pytest.mark.slow  # two processes
@pytest.mark.xdist_group('cpu-ddp')  # one 2-process run for the three
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU process group is for machines without a GPU')
def test_syncbn_trains_in_cpu_ddp(distributed_outcome):
    assert [distributed_outcome[r]['syncbn'] for r in (0, 1)] == ['ok', 'ok']


def test_cpu_process_group_is_left_to_mmengine_elsewhere(monkeypatch):
    """Not started for launcher 'none'/'mpi', nor where the device is an accelerator."""
    from convmlp_mm.engine import distributed
    assert not distributed.init_cpu_process_group('none') and not distributed.init_cpu_process_group('mpi')
    monkeypatch.setattr(distributed, 'get_device', lambda: 'npu')
    assert not distributed.init_cpu_process_group('pytorch')
    assert not torch.distributed.is_initialized()


def test_cpu_amp_optim_wrapper():
    """mmengine's AmpOptimWrapper asserts an accelerator; CPUAmpOptimWrapper autocasts to bfloat16 on the CPU."""
    from mmengine.optim import AmpOptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS
    assert OPTIM_WRAPPERS.get('AmpOptimWrapper') is AmpOptimWrapper  # mmengine's own, untouched
    model = nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(type='CPUAmpOptimWrapper',
                                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    with wrapper.optim_context(model):
        out = model(torch.rand(3, 4))
    assert out.dtype == (torch.float16 if torch.cuda.is_available() else torch.bfloat16)
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().square().mean())
    assert not torch.equal(before, model.weight)
    wrapper.load_state_dict(wrapper.state_dict())


# ------------------------------------------------------------------------ feature detection
def test_autocast_query_works_on_this_torch():
    """torch < 2.4 has no ``torch.is_autocast_enabled(device_type)``; ours answers on every version."""
    from convmlp_mm.compat import is_autocast_enabled
    assert not is_autocast_enabled('cpu')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert is_autocast_enabled('cpu') and not is_autocast_enabled('cuda')
    assert not is_autocast_enabled('cpu')


@pytest.mark.slow  # a fresh interpreter
def test_compat_imports_torch_only():
    """Feature detection changes nothing and needs nothing from OpenMMLab."""
    import subprocess
    import sys
    code = ('import importlib.util, sys; '
            f'spec = importlib.util.spec_from_file_location("compat", {osp.join(ROOT, "convmlp_mm/compat.py")!r}); '
            'spec.loader.exec_module(importlib.util.module_from_spec(spec)); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmcv", "mmdet", "timm")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_cpu_autocast_dtypes_match_the_torch_version():
    from convmlp_mm.compat import CPU_AUTOCAST_DTYPES, TORCH_VERSION
    expected = (torch.bfloat16, torch.float16) if TORCH_VERSION >= (2, 2) else (torch.bfloat16, )
    assert CPU_AUTOCAST_DTYPES == expected


def test_disabled_grad_scaler_passes_gradients_through():
    from convmlp_mm.compat import disabled_grad_scaler
    scaler = disabled_grad_scaler()
    loss = torch.tensor(2.0, requires_grad=True)
    assert not scaler.is_enabled() and scaler.scale(loss) is loss


def test_the_cpu_parts_leave_accelerators_to_mmengine(monkeypatch):
    """On an NPU (or any device but the CPU) CPUAmpOptimWrapper is mmengine's AmpOptimWrapper
    (which asserts that the accelerator is there), and the tools select no CPU wrapper."""
    from mmengine.config import Config

    from convmlp_mm import cli
    from convmlp_mm.engine import amp
    monkeypatch.setattr(amp, 'get_device', lambda: 'npu')
    with pytest.raises(AssertionError, match='only available'):  # mmengine's own check, no NPU here
        amp.CPUAmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    monkeypatch.setattr(cli, 'get_device', lambda: 'npu')
    cfg = Config(dict(launcher='pytorch', train_cfg=dict(by_epoch=True, max_epochs=1),
                      optim_wrapper=dict(type='AmpOptimWrapper'), default_hooks=dict(checkpoint=dict(interval=1))))
    parts = cli.use_runtime_parts(cfg, training=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and 'model_wrapper_cfg' not in cfg
    assert parts == ['SafeCheckpointLoadHook', 'ResumableEpochBasedTrainLoop', 'AtomicLocalBackend']
    assert cfg.train_cfg == dict(type='ResumableEpochBasedTrainLoop', max_epochs=1)
