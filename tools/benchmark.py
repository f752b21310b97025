"""Cost of the backbones and detectors, side by side, in one run: a markdown table and a JSON file.

    python tools/benchmark.py [--quick] [--device cpu|cuda] [--amp] [--out outputs/benchmark.json]

Sections: backbone forward (images/s and peak memory) and training step (forward + backward)
for ConvMLP-S/M/L, the published ConvMLP-S layout (``convmlp_mm.models.reference``), ConvMLP-S
after ``convmlp_mm.fuse`` (inference) and under ``torch.compile``, Pure-MLP-S/M/L and
ResNet-18/50/101 at 800x1216 and 512x512; whole-model inference of the RetinaNet, Mask R-CNN
and Semantic FPN configs; time per megapixel of ConvMLP-S at 0.25-2 megapixels; achieved
GFLOP/s against the machine's measured fp32 matmul peak. Every number is the median of
repeated timed runs after warm-up, each measurement in a fresh process (forked), so that
peak memory is its own: ``torch.cuda.max_memory_allocated`` on CUDA, the rise of the
process's peak resident set (VmHWM) on the CPU. ``--quick`` (tiny sizes, fewer models) is
the smoke form that CI runs. Each measurement first calls
:func:`convmlp_mm.runtime.keep_freed_memory`, as ``tools/train.py`` and ``tools/test.py`` do (freed
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
import time
from typing import Callable, Dict, List, Optional

import torch

import convmlp_mm  # noqa: F401  (registers the backbones)
from convmlp_mm.runtime import keep_freed_memory

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--quick', action='store_true', help='tiny sizes and fewer models: a smoke run')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
parser.add_argument('--amp', action='store_true', help='autocast (fp16 on CUDA, bf16 on CPU)')
parser.add_argument('--out', default='outputs/benchmark.json')
parser.add_argument('--repeats', type=int, help='timed runs per measurement (default 5, quick 2)')
parser.add_argument('--no-compile', action='store_true', help='skip the torch.compile row')


# --------------------------------------------------------------------------- models
def backbone(name: str) -> torch.nn.Module:
    """A backbone by benchmark name (``convmlp-s``, ``published convmlp-s``, ``r50``, ...)."""
    from convmlp_mm import ConvMLP, PureMLP
    from convmlp_mm.models.reference import PublishedConvMLP
    if name.startswith('published '):
        return PublishedTaps(PublishedConvMLP(name[-1]))
    if name.startswith('fused '):
        model = backbone(name[len('fused '):])
        model.eval()
        return convmlp_mm.fuse(model)
    family, _, arch = name.partition('-')
    if family == 'convmlp':
        return ConvMLP(arch)
    if family == 'puremlp':
        return PureMLP(arch)
    from mmdet.models import ResNet
    return ResNet(depth=int(name[1:]))


class PublishedTaps(torch.nn.Module):
    """The published layout, returning F1-F4 like our backbones."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_taps(x)[0]


def detector(config: str, height: int, width: int) -> Callable[[torch.Tensor], object]:
    """``f(images)``: the config's whole model in predict mode (post-processing included)."""
    import importlib

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from convmlp_mm.analysis import TensorForward
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)
    return TensorForward(model, cfg.default_scope, height, width, mode='predict')


# ------------------------------------------------------------------------ measuring
def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _measure(make: Callable[[], torch.nn.Module], shape, train: bool, device: str, amp: bool, repeats: int,
             compile_: bool, keep_freed: bool, queue) -> None:
    torch.manual_seed(0)
    on_cpu = device == 'cpu'
    if on_cpu and keep_freed:
        keep_freed_memory()
    if on_cpu:
        with open('/proc/self/clear_refs', 'w') as f:  # reset VmHWM to the current RSS
            f.write('5')
        base = _rss_kib('VmRSS')
    model = make().to(device)
    model.train(train)  # not chained: some backbones' train() returns None
    if compile_:
        model = torch.compile(model)
    x = torch.rand(*shape, device=device)
    dtype = torch.bfloat16 if on_cpu else torch.float16
    times = []
    for i in range(repeats + 2):  # two warm-up runs
        if not on_cpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=amp), torch.set_grad_enabled(train):
            out = model(x)
        if train:
            sum(o.float().mean() for o in out).backward()
        if not on_cpu:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    peak = (_rss_kib('VmHWM') - base) / 1024 if on_cpu else torch.cuda.max_memory_allocated() / 2**20
    queue.put(dict(seconds=statistics.median(times), peak_mib=peak))


def in_child(target: Callable, *args, device: str = 'cpu'):
    """``target(*args, queue)`` in a fresh process (forked on the CPU); what it puts in the queue."""
    context = mp.get_context('fork' if device == 'cpu' else 'spawn')
    queue = context.Queue()
    proc = context.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'{target.__name__}{args[:2]} failed in its process (exit code {proc.exitcode})')
    return queue.get()


def measure(make, shape, train=False, device='cpu', amp=False, repeats=5, compile_=False,
            keep_freed=True) -> Dict[str, float]:
    """Median seconds per batch and peak memory (MiB) of ``make()(x)`` in a fresh process; with
    ``keep_freed``, after :func:`~convmlp_mm.runtime.keep_freed_memory` as our tools run."""
    return in_child(_measure, make, shape, train, device, amp, repeats, compile_, keep_freed, device=device)


def _matmul_peak(device: str, queue) -> None:
    n = 2048
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    times = []
    for i in range(8):
        if device != 'cpu':
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device != 'cpu':
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    queue.put(2 * n ** 3 / min(times) / 1e9)


def matmul_peak(device: str) -> float:
    """GFLOP/s of the fastest of repeated 2048x2048 fp32 matrix products."""
    return in_child(_matmul_peak, device, device=device)


def _gmacs(name: str, shape, queue) -> None:
    from convmlp_mm.analysis import count_macs
    queue.put(count_macs(backbone(name), (torch.rand(*shape), ))['conv+linear'] / 1e9)


def gmacs(name: str, shape) -> float:
    """Conv+linear GMACs of a backbone at ``shape`` (counted in a forked process)."""
    return in_child(_gmacs, name, shape)


# -------------------------------------------------------------------------- the run
def plan(quick: bool) -> Dict[str, object]:
    if quick:
        return dict(sizes=[(128, 192), (128, 128)], backbones=['convmlp-s', 'published convmlp-s', 'fused convmlp-s',
                                                             'puremlp-s', 'r18'],
                    configs=['retinanet/retinanet_convmlp-s_fpn_1x_coco.py', 'mask_rcnn/mask-rcnn_convmlp-s_fpn_1x_coco.py',
                             'sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py'],
                    config_sizes={'mmdet': (128, 192), 'mmseg': (128, 128)},
                    megapixels=[(64, 96), (96, 128), (128, 192)], compile=False)
    configs = [pattern.format(b) for pattern in ('retinanet/retinanet_{}_fpn_1x_coco.py',
                                                 'mask_rcnn/mask-rcnn_{}_fpn_1x_coco.py',
                                                 'sem_fpn/fpn_{}_8xb2-40k_ade20k-512x512.py')
               for b in ('r50', 'convmlp-s', 'puremlp-s')]
    return dict(sizes=[(800, 1216), (512, 512)],
                backbones=['convmlp-s', 'published convmlp-s', 'fused convmlp-s', 'convmlp-m', 'convmlp-l',
                           'puremlp-s', 'puremlp-m', 'puremlp-l', 'r18', 'r50', 'r101'],
                configs=configs, config_sizes={'mmdet': (800, 1216), 'mmseg': (512, 512)},
                megapixels=[(416, 608), (576, 864), (800, 1248), (1152, 1728)], compile=True)


def main() -> None:
    args = parser.parse_args()
    p = plan(args.quick)
    repeats = args.repeats or (2 if args.quick else 5)
    device = args.device
    report: Dict[str, object] = dict(
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     torch=torch.__version__, device=device if device == 'cpu' else torch.cuda.get_device_name(),
                     threads=torch.get_num_threads()),
        settings=dict(quick=args.quick, amp=args.amp, repeats=repeats,
                      allocator='keep_freed_memory() in every measurement (as tools/train.py and tools/test.py '
                                'run), except in the sections marked "default allocator"'))
    peak = matmul_peak(device)
    report['matmul_peak_gflops'] = peak
    rows: List[dict] = []

    def add(section, name, shape, result, macs: Optional[float] = None):
        row = dict(section=section, model=name, input='x'.join(map(str, shape[-2:])), batch=shape[0],
                   seconds=result['seconds'], images_per_s=shape[0] / result['seconds'], peak_mib=result['peak_mib'])
        if macs is not None:
            factor = 3 if section == 'train step' else 1  # backward ~ twice the forward
            row['gflops_per_s'] = 2 * macs * factor * shape[0] / result['seconds']
            row['of_peak'] = row['gflops_per_s'] / peak
        rows.append(row)
        print(f"{section:14s} {name:22s} {row['input']:>9s} {row['seconds'] * 1e3:9.1f} ms", flush=True)

    for h, w in p['sizes']:
        shape = (1, 3, h, w)
        # the fused model does the same multiply-adds as the unfused one (its MAC count is the unfused model's)
        macs = {name: gmacs(name, shape) for name in p['backbones'] if not name.startswith('fused ')}
        for name in p['backbones']:
            result = measure(lambda name=name: backbone(name), shape, device=device, amp=args.amp, repeats=repeats)
            add('forward', name, shape, result, macs[name.replace('fused ', '')])
        if p['compile'] and not args.no_compile:
            add('forward', 'compiled convmlp-s', shape, measure(lambda: backbone('convmlp-s'), shape, device=device,
                                                               amp=args.amp, repeats=repeats, compile_=True), macs['convmlp-s'])
        for name in p['backbones']:
            if name.startswith('fused '):  # inference only
                continue
            result = measure(lambda name=name: backbone(name), shape, train=True, device=device, amp=args.amp,
                             repeats=repeats)
            add('train step', name, shape, result, macs[name])
    for config in p['configs']:
        scope = 'mmseg' if config.startswith('sem_fpn') else 'mmdet'
        h, w = p['config_sizes'][scope]
        result = measure(lambda config=config: detector(config, h, w), (1, 3, h, w), device=device, amp=args.amp,
                         repeats=max(1, repeats // 2))
        add('inference', osp.basename(config)[:-3], (1, 3, h, w), result)
    # glibc returns freed blocks above 32 MiB to the system, so large inputs pay page faults that
    # small ones do not, and layouts with more copies pay more: measured both ways on the CPU
    for keep_freed in (True, False) if device == 'cpu' else (True, ):
        suffix = '' if keep_freed else ', default allocator'
        if not keep_freed:
            shape = (1, 3, *p['sizes'][0])
            for name in ('convmlp-s', 'published convmlp-s'):
                add('forward' + suffix, name, shape, measure(lambda name=name: backbone(name), shape, device=device,
                                                             repeats=repeats, keep_freed=False))
        for h, w in p['megapixels']:
            shape = (1, 3, h, w)
            result = measure(lambda: backbone('convmlp-s'), shape, device=device, amp=args.amp, repeats=repeats,
                             keep_freed=keep_freed)
            add('scaling' + suffix, 'convmlp-s', shape, result)
            rows[-1]['seconds_per_megapixel'] = result['seconds'] / (h * w / 1e6)
    report['rows'] = rows
    report['summary'] = summarise(rows)
    os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(markdown(report))
    print(f'\nwritten: {args.out}')


def summarise(rows: List[dict]) -> Dict[str, float]:
    """The ratios that the issues ask for."""
    def seconds(section, name, index=0):
        found = [r['seconds'] for r in rows if r['section'] == section and r['model'] == name]
        return found[index] if len(found) > index else float('nan')

    def spread(section):
        per_mp = [r['seconds_per_megapixel'] for r in rows if r['section'] == section]
        return max(per_mp) / min(per_mp) - 1 if per_mp else float('nan')

    def speedup(section, name='convmlp-s'):
        return seconds(section, 'published convmlp-s') / seconds(section, name)
    return dict(
        speedup_over_published=speedup('forward'),
        fused_speedup_over_published=speedup('forward', 'fused convmlp-s'),
        train_step_speedup_over_published=speedup('train step'),
        speedup_over_published_default_allocator=speedup('forward, default allocator'),
        seconds_per_megapixel_spread=spread('scaling'),
        seconds_per_megapixel_spread_default_allocator=spread('scaling, default allocator'))


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; fp32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s.", '',
             '| section | model | input | ms / image | images/s | peak MiB | GFLOP/s | of peak | s / MP |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in report['rows']:
        lines.append(f"| {r['section']} | {r['model']} | {r['input']} | {r['seconds'] * 1e3 / r['batch']:.1f} "
                     f"| {r['images_per_s']:.2f} | {r['peak_mib']:.0f} | {r.get('gflops_per_s', float('nan')):.0f} "
                     f"| {r.get('of_peak', float('nan')):.0%} | {r.get('seconds_per_megapixel', float('nan')):.3f} |")
    s = report['summary']
    lines += ['', f"ConvMLP-S forward vs the published layout: {s['speedup_over_published']:.2f}x "
                  f"(fused for inference: {s['fused_speedup_over_published']:.2f}x; with the default allocator: "
                  f"{s['speedup_over_published_default_allocator']:.2f}x); training step: "
                  f"{s['train_step_speedup_over_published']:.2f}x; time per megapixel varies by "
                  f"{s['seconds_per_megapixel_spread']:.0%} across sizes "
                  f"({s['seconds_per_megapixel_spread_default_allocator']:.0%} with the default allocator)."]
    return '\n'.join(lines).replace('nan%', '-').replace('| nan ', '| - ')


if __name__ == '__main__':
    main()
