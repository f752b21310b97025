"""Cost of the backbones and detectors, side by side, in one run: a markdown table and a JSON file.

    python tools/benchmark.py [--quick] [--device cpu|cuda] [--precisions P ...] [--out outputs/benchmark.json]

Sections: backbone forward (images/s and peak memory) and training step (forward + backward)
for ConvMLP-S/M/L, the published ConvMLP-S layout (``tools/published_convmlp.py``), ConvMLP-S
after ``convmlp_mm.fuse`` (inference) and under ``torch.compile``, Pure-MLP-S/M/L and
ResNet-18/50/101 at 800x1216 and 512x512; whole-model inference of the RetinaNet, Mask R-CNN
and Semantic FPN configs; ONNX Runtime beside PyTorch (ConvMLP-S backbone, RetinaNet and
Semantic FPN tensor outputs); a 2-process DDP training step; time per megapixel of ConvMLP-S
at 0.25-2 megapixels. Every backbone is built without drop path (the published layout has
none), so forward and backward do the same work.

Each row has a precision: ``fp32`` (the default model), ``fp32, prepared`` (after
:func:`convmlp_mm.prepare_inference`: fused, whole model in channels-last memory), ``bf16
autocast`` (the default model under ``torch.autocast``), ``bf16 autocast, prepared`` (what
``tools/test.py --amp`` runs), ``bf16 weights, prepared`` (prepared, then weights and input
converted to bfloat16), and the same with fp16 on CUDA. Achieved GFLOP/s count conv and linear
multiply-adds (x2; a training step as 3x the forward) against the measured matrix-product
peak of the row's dtype (fp32, bf16, fp16). On a CPU without native bfloat16 (oneDNN needs
AVX512-BF16 or AMX; :data:`convmlp_mm.compat.CPU_NATIVE_BF16`) bfloat16 runs in reference
loops, so there the bf16 rows are measured for ConvMLP-S at 512x512 only, to show the cost; rows
in such emulated precisions (bf16 there, fp16 on any CPU) have no peak measured and no share of one.

Every number is the median of repeated timed runs after warm-up, each measurement in a fresh
process (forked), so that peak memory is its own: ``torch.cuda.max_memory_allocated`` on CUDA,
the rise of the process's peak resident set (VmHWM) on the CPU. ``--quick`` (tiny sizes, fewer
models) is the smoke form that CI runs; ``--device cuda`` gives the GPU table (fp32, fp16 and
bf16 autocast, channels-last, a 2-process NCCL DDP step). Each CPU measurement first calls
:func:`convmlp_mm.engine.keep_freed_memory`, as ``tools/train.py`` and ``tools/test.py`` do (freed
CPU memory is reused, not page-faulted again); the sections marked "default allocator" repeat the
ConvMLP-S/published comparison and the scaling without it.
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import platform
import statistics
import tempfile
import time
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import convmlp_mm  # noqa: F401  (registers the backbones)
from convmlp_mm.compat import CPU_NATIVE_BF16
from convmlp_mm.engine import keep_freed_memory

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--quick', action='store_true', help='tiny sizes and fewer models: a smoke run')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
parser.add_argument('--precisions', nargs='+', choices=sorted(DTYPES),
                    help='dtypes measured besides fp32 (default: bf16 on the CPU, fp16 and bf16 on CUDA)')
parser.add_argument('--out', default='outputs/benchmark.json')
parser.add_argument('--repeats', type=int,
                    help='timed runs per measurement (default 5, quick 2), after two warm-up runs '
                         '(one with --repeats 1)')
parser.add_argument('--no-compile', action='store_true', help='skip the torch.compile row')
parser.add_argument('--start-method', choices=['fork', 'spawn'],
                    help="how each measurement's process starts (default: fork on the CPU, spawn on CUDA)")
START_METHOD: Dict[str, str] = {}  # --start-method, set by main
SECTIONS = ('backbones', 'models', 'onnx', 'ddp', 'scaling')
parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS),
                    help='what to measure (default: everything)')


# --------------------------------------------------------------------------- models
def backbone(name: str) -> torch.nn.Module:
    """A backbone by benchmark name (``convmlp-s``, ``published convmlp-s``, ``r50``, ...), without
    drop path."""
    from convmlp_mm import ConvMLP, PureMLP
    from published_convmlp import PublishedConvMLP
    if name.startswith('published '):
        return PublishedTaps(PublishedConvMLP(name[-1]))
    if name.startswith('fused '):
        model = backbone(name[len('fused '):])
        model.eval()
        return convmlp_mm.fuse(model)
    family, _, arch = name.partition('-')
    if family == 'convmlp':
        return ConvMLP(arch, drop_path_rate=0.)
    if family == 'puremlp':
        return PureMLP(arch, drop_path_rate=0.)
    from mmdet.models import ResNet
    return ResNet(depth=int(name[1:]))


class PublishedTaps(torch.nn.Module):
    """The published layout, returning F1-F4 like our backbones."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_taps(x)[0]


def detector(config: str, height: int, width: int, mode: str = 'predict') -> torch.nn.Module:
    """The config's whole model taking one image tensor: ``mode='predict'`` (post-processing
    included) or ``'tensor'`` (the network's raw outputs, what ONNX exports)."""
    from convmlp_mm.analysis import TensorForward
    from convmlp_mm.deployment import build_model
    model, scope = build_model(osp.join(ROOT, 'configs', config))
    return TensorForward(model, scope, height, width, mode=mode)


def precision(name: str) -> Tuple[bool, Optional[torch.dtype], Optional[torch.dtype]]:
    """``(prepared, autocast dtype, weights dtype)`` of a precision name (see the module docstring)."""
    dtype = DTYPES[name.split()[0].rstrip(',')]
    prepared = name.endswith('prepared')
    autocast = dtype if 'autocast' in name else None
    weights = dtype if 'weights' in name else None
    return prepared, autocast, weights


# ------------------------------------------------------------------------ measuring
def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def median_seconds(step: Callable[[], object], repeats: int, cuda: bool = False) -> float:
    """Median wall time of ``step()`` over ``repeats`` runs after two warm-up runs, one when
    ``repeats`` is 1 (a smoke run), synchronising CUDA around each run when ``cuda``."""
    warmups = min(2, repeats)
    times = []
    for i in range(warmups + repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmups:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(make: Callable[[], torch.nn.Module], shape, train: bool, device: str, precision_name: str,
             repeats: int, compile_: bool, keep_freed: bool, queue) -> None:
    from convmlp_mm import prepare_inference
    torch.manual_seed(0)
    on_cpu = device == 'cpu'
    if on_cpu and keep_freed:
        keep_freed_memory()
    if on_cpu:
        with open('/proc/self/clear_refs', 'w') as f:  # reset VmHWM to the current RSS
            f.write('5')
        base = _rss_kib('VmRSS')
    prepared, autocast, weights = precision(precision_name)
    model = make().to(device)
    model.train(train)  # not chained: some backbones' train() returns None
    if prepared:
        prepare_inference(model)
    x = torch.rand(*shape, device=device)
    if weights is not None:
        model.to(weights)
        x = x.to(weights)
    if compile_:
        model = torch.compile(model)
    def step() -> None:
        with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None), \
                torch.set_grad_enabled(train):
            out = model(x)
        if train:
            sum(o.float().mean() for o in out).backward()

    seconds = median_seconds(step, repeats, cuda=not on_cpu)
    peak = (_rss_kib('VmHWM') - base) / 1024 if on_cpu else torch.cuda.max_memory_allocated() / 2**20
    queue.put(dict(seconds=seconds, peak_mib=peak))


def in_child(target: Callable, *args, device: str = 'cpu'):
    """``target(*args, queue)`` in a fresh process (forked on the CPU, spawned on CUDA or with
    ``--start-method spawn``: ``target`` and ``args`` are picklable); what it puts in the queue."""
    context = mp.get_context(START_METHOD.get('method') or ('fork' if device == 'cpu' else 'spawn'))
    queue = context.Queue()
    proc = context.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'{target.__name__}{args[:2]} failed in its process (exit code {proc.exitcode})')
    return queue.get()


def measure(make, shape, train=False, device='cpu', precision_name='fp32', repeats=5, compile_=False,
            keep_freed=True) -> Dict[str, float]:
    """Median seconds per batch and peak memory (MiB) of ``make()(x)`` in a fresh process; with
    ``keep_freed``, after :func:`~convmlp_mm.engine.keep_freed_memory` as our tools run."""
    return in_child(_measure, make, shape, train, device, precision_name, repeats, compile_, keep_freed,
                    device=device)


def _matmul_peak(device: str, dtype_name: str, largest: int, queue) -> None:
    dtype = DTYPES[dtype_name]
    best = 0.
    for n in [n for n in (512, 1024, 2048, 4096) if n <= largest]:  # or until a product takes 0.25 s
        a, b = torch.rand(n, n, device=device).to(dtype), torch.rand(n, n, device=device).to(dtype)
        times = []
        for _ in range(5):
            if device != 'cpu':
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device != 'cpu':
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n ** 3 / min(times[1:]) / 1e9)
        if min(times) > 0.25:
            break
    queue.put(best)


def matmul_peak(device: str, dtype_name: str = 'fp32', largest: int = 4096) -> float:
    """GFLOP/s of the fastest of repeated square matrix products in ``dtype_name`` (up to
    ``largest``^3)."""
    return in_child(_matmul_peak, device, dtype_name, largest, device=device)


def _gmacs(name: str, shape, queue) -> None:
    from convmlp_mm.analysis import count_macs
    queue.put(count_macs(backbone(name), (torch.rand(*shape), ))['conv+linear'] / 1e9)


def gmacs(name: str, shape) -> float:
    """Conv+linear GMACs of a backbone at ``shape`` (counted in a forked process)."""
    return in_child(_gmacs, name, shape)


def _onnx_rows(config: Optional[str], shape, repeats: int, queue) -> None:
    """PyTorch (fp32, eval) and ONNX Runtime seconds of the same tensor graph: a config's
    network, or with ``config=None`` the ConvMLP-S backbone."""
    from convmlp_mm.deployment import TensorGraph, export_onnx, ort_session
    keep_freed_memory()
    if config is None:
        holder = torch.nn.Module()
        holder.backbone = backbone('convmlp-s')
        graph = TensorGraph(holder, 'mmdet', 'backbone')
    else:
        from convmlp_mm.deployment import build_model
        graph = TensorGraph(*build_model(osp.join(ROOT, 'configs', config)))
    graph.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        export_onnx(graph, path, shape[-2:])
        session, image = ort_session(path), np.random.rand(*shape).astype(np.float32)
        ort = median_seconds(lambda: session.run(None, {'image': image}), repeats)
    x = torch.rand(*shape)
    with torch.no_grad():
        pytorch = median_seconds(lambda: graph(x), repeats)
    queue.put(dict(pytorch=pytorch, onnxruntime=ort))


def _ddp_worker(rank: int, world: int, device: str, shape, repeats: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    # NCCL needs a GPU per process; with fewer GPUs the processes share them over gloo
    nccl = device == 'cuda' and torch.cuda.device_count() >= world
    torch.distributed.init_process_group('nccl' if nccl else 'gloo', rank=rank, world_size=world)
    if device == 'cuda':
        torch.cuda.set_device(rank % torch.cuda.device_count())
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    keep_freed_memory()
    torch.manual_seed(rank)
    model = backbone('convmlp-s').to(device).train()
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[rank % torch.cuda.device_count()] if device == 'cuda' else None)
    x = torch.rand(*shape, device=device)
    seconds = median_seconds(lambda: sum(o.mean() for o in ddp(x)).backward(), repeats, cuda=device == 'cuda')
    if rank == 0:
        queue.put(dict(seconds=seconds, peak_mib=float('nan')))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def ddp_step(device: str, shape, repeats: int, world: int = 2) -> Dict[str, float]:
    """Median seconds of one DDP training step of ConvMLP-S (batch ``shape[0]`` per process) in
    ``world`` processes (NCCL on CUDA, one GPU each, or gloo where GPUs are fewer than processes;
    gloo on the CPU, the cores shared)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    context = mp.get_context('spawn')
    queue = context.Queue()
    procs = [context.Process(target=_ddp_worker, args=(rank, world, device, shape, repeats, port, queue))
             for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode != 0 for proc in procs):
        raise RuntimeError(f'the DDP step failed (exit codes {[p.exitcode for p in procs]})')
    return queue.get()


# -------------------------------------------------------------------------- the run
def plan(quick: bool, device: str, extra: List[str]) -> Dict[str, object]:
    """What a run measures. ``extra``: the dtypes besides fp32."""
    native = device != 'cpu' or CPU_NATIVE_BF16
    low = [d for d in extra if d != 'fp32']
    inference = ['fp32', 'fp32, prepared'] + [f'{d} autocast, prepared' for d in low]
    if quick:
        return dict(sizes=[(128, 192), (128, 128)], backbones=['convmlp-s', 'published convmlp-s', 'fused convmlp-s',
                                                             'puremlp-s', 'r18'],
                    low=low, low_backbones=['convmlp-s'], low_sizes=[(128, 128)],
                    configs=['retinanet/retinanet_convmlp-s_fpn_1x_coco.py',
                             'mask_rcnn/mask-rcnn_convmlp-s_fpn_1x_coco.py',
                             'sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py'],
                    config_precisions=inference, config_sizes={'mmdet': (128, 192), 'mmseg': (128, 128)},
                    onnx=[None, 'retinanet/retinanet_convmlp-s_fpn_1x_coco.py',
                          'sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py'],
                    ddp_shape=(1, 3, 96, 96), megapixels=[(64, 96), (96, 128), (128, 192)], compile=False,
                    matmul_largest=1024)
    configs = [pattern.format(b) for pattern in ('retinanet/retinanet_{}_fpn_1x_coco.py',
                                                 'mask_rcnn/mask-rcnn_{}_fpn_1x_coco.py',
                                                 'sem_fpn/fpn_{}_8xb2-40k_ade20k-512x512.py')
               for b in ('r50', 'convmlp-s', 'puremlp-s')]
    backbones = ['convmlp-s', 'published convmlp-s', 'fused convmlp-s', 'convmlp-m', 'convmlp-l',
                 'puremlp-s', 'puremlp-m', 'puremlp-l', 'r18', 'r50', 'r101']
    return dict(sizes=[(800, 1216), (512, 512)], backbones=backbones,
                low=low, low_backbones=[b for b in backbones if 'fused' not in b] if native else ['convmlp-s'],
                low_sizes=[(800, 1216), (512, 512)] if native else [(512, 512)],
                configs=configs, config_precisions=inference if native else ['fp32', 'fp32, prepared'],
                config_sizes={'mmdet': (800, 1216), 'mmseg': (512, 512)},
                onnx=[None, 'retinanet/retinanet_convmlp-s_fpn_1x_coco.py',
                      'sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py'],
                ddp_shape=(2, 3, 512, 512), megapixels=[(416, 608), (576, 864), (800, 1248), (1152, 1728)],
                compile=True, matmul_largest=4096)


def machine(device: str) -> Dict[str, object]:
    """What the numbers were measured on."""
    capability = getattr(getattr(torch.backends, 'cpu', None), 'get_cpu_capability', lambda: None)()
    return dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                torch=torch.__version__, device=device if device == 'cpu' else torch.cuda.get_device_name(),
                threads=torch.get_num_threads(), cpu_native_bf16=CPU_NATIVE_BF16, cpu_capability=capability)


class Rows(list):
    """The rows of one run, each printed as it is measured.

    Args:
        device (str): Where the measurements run.
        repeats (int): Timed repeats of each measurement.
        peaks (dict): Matrix-product GFLOP/s per precision, for each row's share of its peak.
    """

    def __init__(self, device: str, repeats: int, peaks: Dict[str, float]) -> None:
        super().__init__()
        self.device, self.repeats, self.peaks = device, repeats, peaks

    def add(self, section: str, name: str, shape, result: dict, macs: Optional[float] = None,
            precision_name: str = 'fp32') -> None:
        row = dict(section=section, model=name, precision=precision_name, input='x'.join(map(str, shape[-2:])),
                   batch=shape[0], seconds=result['seconds'], images_per_s=shape[0] / result['seconds'],
                   peak_mib=result['peak_mib'])
        if macs is not None:
            factor = 3 if 'train step' in section else 1  # backward ~ twice the forward
            row['gflops_per_s'] = 2 * macs * factor * shape[0] / result['seconds']
            dtype = precision_name.split()[0].rstrip(',')
            if dtype in self.peaks:
                row['of_peak'] = row['gflops_per_s'] / self.peaks[dtype]
        self.append(row)
        print(f"{section:14s} {name:22s} {precision_name:24s} {row['input']:>9s} {row['seconds'] * 1e3:9.1f} ms "
              f"{row['peak_mib']:7.0f} MiB", flush=True)

    def backbone(self, section: str, name: str, shape, precision_name: str = 'fp32', train: bool = False,
                 macs: Optional[float] = None, **kwargs) -> None:
        """Measures backbone ``name`` and adds its row."""
        result = measure(partial(backbone, name), shape, train=train, device=self.device,
                         precision_name=precision_name, repeats=self.repeats, **kwargs)
        self.add(section, name, shape, result, macs, precision_name)


def backbone_rows(rows: Rows, p: dict, args) -> None:
    """Forward and training step of each backbone, in each precision where the plan asks."""
    for h, w in p['sizes']:
        shape = (1, 3, h, w)
        # the fused model does the same multiply-adds as the unfused one (its MAC count is the unfused model's)
        macs = {name: gmacs(name, shape) for name in p['backbones'] if not name.startswith('fused ')}
        low = (h, w) in p['low_sizes']
        for name in p['backbones']:
            rows.backbone('forward', name, shape, macs=macs[name.replace('fused ', '')])
            for d in p['low'] if low and name in p['low_backbones'] else []:
                rows.backbone('forward', name, shape, f'{d} autocast', macs=macs[name])
                rows.backbone('forward', name, shape, f'{d} weights, prepared', macs=macs[name])
        if p['compile'] and not args.no_compile:
            result = measure(partial(backbone, 'convmlp-s'), shape, device=rows.device, repeats=rows.repeats,
                             compile_=True)
            rows.add('forward', 'compiled convmlp-s', shape, result, macs['convmlp-s'])
        for name in [n for n in p['backbones'] if not n.startswith('fused ')]:  # fused: inference only
            rows.backbone('train step', name, shape, train=True, macs=macs[name])
            trains_low = low and name in p['low_backbones'] and not name.startswith('published')
            for d in p['low'] if trains_low else []:
                rows.backbone('train step', name, shape, f'{d} autocast', train=True, macs=macs[name])


def model_rows(rows: Rows, p: dict, args) -> None:
    """Whole-model inference of each config, in each of the plan's precisions."""
    for config in p['configs']:
        scope = 'mmseg' if config.startswith('sem_fpn') else 'mmdet'
        h, w = p['config_sizes'][scope]
        for precision_name in p['config_precisions']:
            result = measure(partial(detector, config, h, w), (1, 3, h, w), device=rows.device,
                             precision_name=precision_name, repeats=max(1, rows.repeats // 2))
            rows.add('inference', osp.basename(config)[:-3], (1, 3, h, w), result, precision_name=precision_name)


def onnx_rows(rows: Rows, p: dict, args) -> None:
    """The exported graphs under ONNX Runtime beside PyTorch on the same tensors (CPU only)."""
    for config in p['onnx'] if rows.device == 'cpu' else []:
        scope = 'mmseg' if config is None or config.startswith('sem_fpn') else 'mmdet'
        shape = (1, 3, *p['config_sizes'][scope])
        result = in_child(_onnx_rows, config, shape, rows.repeats)
        name = 'convmlp-s' if config is None else osp.basename(config)[:-3]
        for runtime in ('pytorch', 'onnxruntime'):
            rows.add(f'tensor outputs, {runtime}', name, shape, dict(seconds=result[runtime], peak_mib=float('nan')))


def ddp_rows(rows: Rows, p: dict, args) -> None:
    """One DDP training step in two processes."""
    rows.add('ddp train step, 2 processes', 'convmlp-s', p['ddp_shape'], ddp_step(rows.device, p['ddp_shape'],
                                                                                 rows.repeats))


def scaling_rows(rows: Rows, p: dict, args) -> None:
    """Seconds per megapixel over the plan's sizes. glibc returns freed blocks above 32 MiB to the
    system, so large inputs pay page faults that small ones do not, and layouts with more copies
    pay more: on the CPU measured with and without :func:`keep_freed_memory`."""
    for keep_freed in (True, False) if rows.device == 'cpu' else (True, ):
        suffix = '' if keep_freed else ', default allocator'
        for name in () if keep_freed else ('convmlp-s', 'published convmlp-s'):
            rows.backbone('forward' + suffix, name, (1, 3, *p['sizes'][0]), keep_freed=False)
        for h, w in p['megapixels']:
            rows.backbone('scaling' + suffix, 'convmlp-s', (1, 3, h, w), keep_freed=keep_freed)
            rows[-1]['seconds_per_megapixel'] = rows[-1]['seconds'] / (h * w / 1e6)


#: What each of ``--sections`` measures, in this order.
SECTION_ROWS = dict(backbones=backbone_rows, models=model_rows, onnx=onnx_rows, ddp=ddp_rows,
                    scaling=scaling_rows)


def main() -> None:
    args = parser.parse_args()
    START_METHOD['method'] = args.start_method
    device = args.device
    extra = args.precisions if args.precisions is not None else (['bf16'] if device == 'cpu' else ['fp16', 'bf16'])
    p = plan(args.quick, device, extra)
    repeats = args.repeats or (2 if args.quick else 5)
    report: Dict[str, object] = dict(
        machine=machine(device),
        settings=dict(quick=args.quick, precisions=['fp32'] + p['low'], repeats=repeats,
                      allocator='keep_freed_memory() in every measurement (as tools/train.py and tools/test.py '
                                'run), except in the sections marked "default allocator"'))
    # Emulated low precision on the CPU has no peak to compare with: its matrix products run in
    # reference loops, while autocast keeps part of the model in float32.
    peaks = {d: matmul_peak(device, d, p['matmul_largest']) for d in ['fp32'] + p['low']
             if d == 'fp32' or device != 'cpu' or (d == 'bf16' and CPU_NATIVE_BF16)}
    report['matmul_peak_gflops'] = peaks
    print('matmul peaks (GFLOP/s): ' + ', '.join(f'{d} {v:.1f}' for d, v in peaks.items()), flush=True)
    rows = Rows(device, repeats, peaks)
    for section in [s for s in SECTION_ROWS if s in args.sections]:
        SECTION_ROWS[section](rows, p, args)
    report['rows'] = list(rows)
    report['summary'] = summarise(rows, p['sizes'])
    os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(markdown(report))
    print(f'\nwritten: {args.out}')


def summarise(rows: List[dict], sizes) -> Dict[str, float]:
    """The ratios that the issues ask for (NaN where a row was not measured)."""
    def seconds(section, name, precision_name='fp32', size=None):
        found = [r['seconds'] for r in rows if r['section'] == section and r['model'] == name
                 and r['precision'] == precision_name and (size is None or r['input'] == 'x'.join(map(str, size)))]
        return found[0] if found else float('nan')

    def spread(section):
        per_mp = [r['seconds_per_megapixel'] for r in rows if r['section'] == section]
        return max(per_mp) / min(per_mp) - 1 if per_mp else float('nan')

    summary = {}
    for size in sizes:
        tag = 'x'.join(map(str, size))
        fp32 = seconds('forward', 'convmlp-s', size=size)
        summary[f'forward_over_published_{tag}'] = seconds('forward', 'published convmlp-s', size=size) / fp32
        summary[f'train_step_over_published_{tag}'] = (seconds('train step', 'published convmlp-s', size=size)
                                                       / seconds('train step', 'convmlp-s', size=size))
        for d in ('bf16', 'fp16'):
            summary[f'{d}_autocast_forward_over_fp32_{tag}'] = fp32 / seconds('forward', 'convmlp-s',
                                                                              f'{d} autocast', size)
            summary[f'{d}_weights_forward_over_fp32_{tag}'] = fp32 / seconds('forward', 'convmlp-s',
                                                                             f'{d} weights, prepared', size)
            summary[f'{d}_train_step_over_fp32_{tag}'] = (seconds('train step', 'convmlp-s', size=size)
                                                          / seconds('train step', 'convmlp-s', f'{d} autocast', size))
    for model in sorted({r['model'] for r in rows if r['section'] == 'inference'}):
        default = seconds('inference', model)
        for precision_name in ('fp32, prepared', 'bf16 autocast, prepared', 'fp16 autocast, prepared'):
            summary[f'{model} {precision_name} over fp32'] = default / seconds('inference', model, precision_name)
    for model in sorted({r['model'] for r in rows if r['section'].startswith('tensor outputs')}):
        summary[f'{model} onnxruntime over pytorch'] = (seconds('tensor outputs, pytorch', model)
                                                        / seconds('tensor outputs, onnxruntime', model))
    summary['seconds_per_megapixel_spread'] = spread('scaling')
    summary['seconds_per_megapixel_spread_default_allocator'] = spread('scaling, default allocator')
    return {k: v for k, v in summary.items() if v == v}  # NaN: not measured in this run


def markdown(report: dict) -> str:
    peaks = ', '.join(f'{d} {v:.1f}' for d, v in report['matmul_peak_gflops'].items())
    lines = [f"Machine: {report['machine']}; matrix-product peaks (GFLOP/s): {peaks}.", '',
             '| section | model | precision | input | ms / batch | images/s | peak MiB | GFLOP/s | of its peak '
             '| s / MP |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in report['rows']:
        lines.append(f"| {r['section']} | {r['model']} | {r['precision']} | {r['batch']}x{r['input']} "
                     f"| {r['seconds'] * 1e3:.1f} | {r['images_per_s']:.2f} | {r['peak_mib']:.0f} "
                     f"| {r.get('gflops_per_s', float('nan')):.0f} | {r.get('of_peak', float('nan')):.0%} "
                     f"| {r.get('seconds_per_megapixel', float('nan')):.3f} |")
    lines += ['', '| ratio | value |', '|---|---|']
    lines += [f'| {k} | {v:.2f}{"" if "spread" in k else "x"} |' for k, v in report['summary'].items()]
    return '\n'.join(lines).replace('nan%', '-').replace('| nan ', '| - ')


if __name__ == '__main__':
    main()
