"""Each shim of convmlp_mm.compat, checked on the code path that breaks without it."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner
from toy import ToyDataset, ToyModel

import convmlp_mm  # noqa: F401  (applies the shims)


def toy_runner(work_dir, max_iters, resume=False):
    return Runner(model=ToyModel(), work_dir=str(work_dir), resume=resume,
                  train_dataloader=dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=True),
                                        batch_size=2, num_workers=0),
                  optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
                  param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=False),
                  train_cfg=dict(by_epoch=False, max_iters=max_iters),
                  default_hooks=dict(checkpoint=dict(type=CheckpointHook, interval=2, by_epoch=False)),
                  randomness=dict(seed=0), env_cfg=dict(dist_cfg=dict(backend='nccl')))


def test_runner_resumes_a_checkpoint_hook_checkpoint(tmp_path):
    """Shim 1: the checkpoint holds message_hub's HistoryBuffer and numpy objects."""
    toy_runner(tmp_path, max_iters=2).train()
    checkpoint = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    assert 'message_hub' in checkpoint and 'meta' in checkpoint
    runner = toy_runner(tmp_path, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    steps = {int(state['step']) for state in runner.optim_wrapper.optimizer.state.values()}
    assert steps == {4}  # AdamW's state came back from the checkpoint


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    import convmlp_mm  # noqa: F401
    from mmcv.cnn import build_norm_layer
    from mmengine.dist import init_dist
    from mmengine.model import MMDistributedDataParallel
    outcome = {}
    try:  # shim 2: launcher='pytorch' with the configs' nccl backend, no GPU
        init_dist('pytorch', backend='nccl')
        outcome['init_dist'] = torch.distributed.get_backend()
    except Exception as error:  # reported to the parent test
        outcome['init_dist'] = repr(error)
        results[rank] = outcome
        return
    model = nn.Sequential(nn.Conv2d(3, 4, 3), build_norm_layer(dict(type='SyncBN'), 4)[1])
    try:  # shim 3: Runner.wrap_model passes device_ids
        ddp = MMDistributedDataParallel(module=model, device_ids=[rank], broadcast_buffers=False)
        outcome['ddp'] = 'ok'
    except Exception as error:
        outcome['ddp'] = repr(error)
        ddp = MMDistributedDataParallel(module=model, broadcast_buffers=False)
    try:  # shim 4: SyncBN in CPU DDP
        ddp(torch.rand(2, 3, 8, 8)).sum().backward()
        outcome['syncbn'] = 'ok'
    except Exception as error:
        outcome['syncbn'] = repr(error)
    torch.distributed.destroy_process_group()
    results[rank] = outcome


@pytest.fixture(scope='module')
def distributed_outcome():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        return dict(results)


def test_init_dist_pytorch_without_gpu_uses_gloo(distributed_outcome):
    assert [distributed_outcome[r]['init_dist'] for r in (0, 1)] == ['gloo', 'gloo']


def test_ddp_of_a_cpu_model_accepts_device_ids(distributed_outcome):
    assert [distributed_outcome[r]['ddp'] for r in (0, 1)] == ['ok', 'ok']


def test_syncbn_trains_in_cpu_ddp(distributed_outcome):
    assert [distributed_outcome[r]['syncbn'] for r in (0, 1)] == ['ok', 'ok']


def test_amp_optim_wrapper_without_cuda():
    """Shim 5: mmengine's AmpOptimWrapper asserts CUDA; ours autocasts to bfloat16 on the CPU."""
    from mmengine.registry import OPTIM_WRAPPERS
    model = nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(type='AmpOptimWrapper', optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
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


def test_cpu_autocast_dtypes_match_the_torch_version():
    from convmlp_mm.compat import CPU_AUTOCAST_DTYPES, TORCH_VERSION
    expected = (torch.bfloat16, torch.float16) if TORCH_VERSION >= (2, 2) else (torch.bfloat16, )
    assert CPU_AUTOCAST_DTYPES == expected


def test_disabled_grad_scaler_passes_gradients_through():
    from convmlp_mm.compat import disabled_grad_scaler
    scaler = disabled_grad_scaler()
    loss = torch.tensor(2.0, requires_grad=True)
    assert not scaler.is_enabled() and scaler.scale(loss) is loss
