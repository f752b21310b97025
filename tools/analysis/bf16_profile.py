"""bfloat16 against the CPU's own limit: the ConvMLP-S forward at one size in float32, under bf16
autocast and with prepared bf16 weights, set against the bf16/fp32 ratio of matrix-product peaks
measured in the same process, and the profiler's top operators of each form, each set against its
float32 time (where the time goes that the matrix products do not explain), and each dense
convolution alone with its achieved GFLOP/s in both precisions.

    python tools/analysis/bf16_profile.py [--size 640 960] [--repeats 5] [--rows 12] [--out FILE.json]
"""
import argparse
import copy
import json
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path[:0] = [ROOT, osp.join(ROOT, 'tools')]

from benchmark import median_seconds  # noqa: E402
from convmlp_mm import ConvMLP, prepare_inference  # noqa: E402
from convmlp_mm.compat import CPU_NATIVE_BF16  # noqa: E402
from convmlp_mm.engine import keep_freed_memory  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--size', type=int, nargs=2, default=[640, 960], metavar=('H', 'W'))
parser.add_argument('--repeats', type=int, default=5)
parser.add_argument('--rows', type=int, default=12, help='profiler rows per form')
parser.add_argument('--out', help='write the numbers as JSON here')


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix product in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9


def top_operators(run, rows: int) -> list:
    """The profiler's operators of one run, most self CPU time first."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [dict(op=e.key, self_ms=e.self_cpu_time_total / 1e3, share=e.self_cpu_time_total / total, calls=e.count)
            for e in events[:rows]]


def dense_convolutions(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list:
    """Each dense convolution of the prepared ``model`` alone, at the input it gets from ``x``, in
    float32 and bfloat16 (channels-last, as prepared): milliseconds and achieved GFLOP/s."""
    inputs = {}
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    def keep_input(module, args, output) -> None:  # returns None: the output stays as it is
        inputs.setdefault(module, args[0].float())

    handles = [m.register_forward_hook(keep_input) for _, m in convs]
    model(x)
    for handle in handles:
        handle.remove()
    rows = []
    for name, conv in convs:
        a = inputs[conv].contiguous(memory_format=torch.channels_last)
        out = conv(a)
        flops = 2 * out.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        low, a16 = copy.deepcopy(conv).to(torch.bfloat16), a.to(torch.bfloat16)
        fp32, bf16 = median_seconds(lambda: conv(a), repeats), median_seconds(lambda: low(a16), repeats)
        rows.append(dict(conv=name, input=list(a.shape), kernel=list(conv.kernel_size), fp32_ms=fp32 * 1e3,
                         bf16_ms=bf16 * 1e3, fp32_gflops=flops / fp32 / 1e9, bf16_gflops=flops / bf16 / 1e9))
    return rows


def main() -> None:
    args = parser.parse_args()
    if not CPU_NATIVE_BF16:
        sys.exit('this CPU has no native bfloat16 (AVX512-BF16 or AMX): its bf16 runs in reference loops')
    keep_freed_memory()
    torch.manual_seed(0)
    x = torch.rand(1, 3, *args.size)
    model = ConvMLP('s', drop_path_rate=0.).eval()
    prepared = prepare_inference(ConvMLP('s', drop_path_rate=0.).eval()).to(torch.bfloat16)
    forms = {
        'fp32': lambda: model(x),
        'bf16 autocast': lambda: model(x),
        'bf16 weights, prepared': lambda: prepared(x.to(torch.bfloat16)),
    }
    peaks = {'fp32': matmul_peak(torch.float32), 'bf16': matmul_peak(torch.bfloat16)}
    result = dict(size=args.size, threads=torch.get_num_threads(), matmul_peak_gflops=peaks,
                  peak_ratio=peaks['bf16'] / peaks['fp32'], forms={})
    with torch.no_grad():
        for name, run in forms.items():
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=name == 'bf16 autocast'):
                seconds = median_seconds(run, args.repeats)
                top = top_operators(run, args.rows)
            result['forms'][name] = dict(seconds=seconds, top=top)
    fp32 = result['forms']['fp32']['seconds']
    print(f"matmul peaks: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s (ratio "
          f"{result['peak_ratio']:.2f}); forward {args.size[0]}x{args.size[1]}: fp32 {fp32 * 1e3:.0f} ms")
    for name, form in result['forms'].items():
        form['speedup'] = fp32 / form['seconds']
        form['of_peak_ratio'] = form['speedup'] / result['peak_ratio']
        print(f"{name}: {form['seconds'] * 1e3:.0f} ms, {form['speedup']:.2f}x fp32 = {form['of_peak_ratio']:.0%} "
              'of the peak ratio')
        fp32_ms = {row['op']: row['self_ms'] for row in result['forms']['fp32']['top']}
        for row in form['top']:
            row['fp32_ms'] = fp32_ms.get(row['op'])
            against = f"{row['fp32_ms'] / row['self_ms']:5.2f}x fp32's" if row['fp32_ms'] else ''
            print(f"    {row['op']:40s} {row['self_ms']:8.1f} ms {row['share']:6.1%} {row['calls']:5d} calls {against}")
    fp32_model = prepare_inference(ConvMLP('s', drop_path_rate=0.).eval())
    with torch.no_grad():
        result['dense_convolutions'] = dense_convolutions(fp32_model, x, args.repeats)
    print('dense convolutions alone (fp32 / bf16 ms, GFLOP/s):')
    for row in result['dense_convolutions']:
        print(f"    {row['conv']:32s} {str(row['input']):22s} {row['fp32_ms']:6.2f} / {row['bf16_ms']:6.2f} ms "
              f"{row['fp32_gflops']:5.0f} / {row['bf16_gflops']:5.0f} GFLOP/s")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
