"""What our runtime parts cost a training step: 2 gloo processes, the same step with and without them.

    python tools/analysis/runtime_overhead.py [--iters 40] [--rounds 3] [--size 64] [--batch 4]

In each of 2 processes (gloo, ``CPUDistributedDataParallel``, one thread each) a ConvMLP-S
backbone with a linear head trains on random ``--size`` images, batch ``--batch`` per process,
in alternating runs (ABBA order): mmengine's ``EpochBasedTrainLoop`` alone, and with the parts our tools add
(``ResumableEpochBasedTrainLoop``, ``RandomStateHook``, ``FiniteLossHook``, ``PreemptionHook``,
``StallWatchdogHook``, ``SafeCheckpointLoadHook``, and the wrapper's ``fixed_buckets``), ``--rounds``
times each, ``--iters`` iterations a run. The time of an iteration is from its first hook to its last (the same timing
hook in both); the first 5 of each run are left out. Prints the median per iteration of each and
the overhead as a markdown row.
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.multiprocessing as mp

PARTS = [dict(type='SafeCheckpointLoadHook'), dict(type='RandomStateHook'), dict(type='FiniteLossHook'),
         dict(type='PreemptionHook'), dict(type='StallWatchdogHook', timeout=600)]


def _run(rank: int, port: int, args, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from convmlp_mm.engine import init_cpu_process_group
    from convmlp_mm.models import ConvMLP
    init_cpu_process_group('pytorch')

    class Classifier(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = ConvMLP('s', out_indices=(3, ))
            self.head = torch.nn.Linear(512, 10)

        def forward(self, inputs, data_samples=None, mode='loss'):
            features = self.backbone(torch.stack(inputs))[-1].mean((2, 3))
            return dict(loss=self.head(features).logsumexp(1).mean())

    class Timer(Hook):
        def __init__(self, times):
            self.times = times

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.times.append(time.perf_counter() - self.start)

    generator = torch.Generator().manual_seed(rank)
    dataset = [dict(inputs=torch.rand(3, args.size, args.size, generator=generator))] * (args.iters * args.batch * 2)
    seconds = {'without': [], 'with': []}
    for round_ in range(args.rounds):
        for name in ('without', 'with') if round_ % 2 == 0 else ('with', 'without'):  # drift cancels
            times = []
            runner = Runner(
                model=Classifier(), experiment_name=f'overhead-{name}-{round_}', work_dir=args.work_dir,
                train_dataloader=dict(dataset=dataset, sampler=dict(type='DefaultSampler', shuffle=False),
                                      batch_size=args.batch, collate_fn=dict(type='pseudo_collate')),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001)),  # stable over 100+ iterations
                train_cfg=dict(type='ResumableEpochBasedTrainLoop' if name == 'with' else 'EpochBasedTrainLoop',
                               max_epochs=1),
                custom_hooks=PARTS if name == 'with' else [], default_hooks=dict(checkpoint=None),
                launcher='pytorch', cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel',
                                                                  fixed_buckets=name == 'with')),
                log_level='WARNING', default_scope='mmengine')
            runner.register_hook(Timer(times), priority='HIGHEST')
            runner.train()
            seconds[name] += times[5:]
    results[rank] = seconds
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=40, help='iterations a run (default 40)')
    parser.add_argument('--rounds', type=int, default=4, help='runs with and without the parts (default 4 each)')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--work-dir', default='work_dirs/runtime_overhead')
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_run, args=(port, args, results), nprocs=2)
    without = statistics.median(results[0]['without'])
    with_parts = statistics.median(results[0]['with'])
    print(f'| 2-process gloo training step, ConvMLP-S + linear head, {args.size}x{args.size}, batch {args.batch} per '
          f'process ({len(results[0]["with"])} iterations each) | {without * 1000:.1f} ms | {with_parts * 1000:.1f} ms '
          f'| {100 * (with_parts / without - 1):+.2f} % |')


if __name__ == '__main__':
    main()
