"""int8 against float32 on the generated data, as a user runs it: the quickstart RetinaNet,
Semantic FPN and classifier trained with tools/train.py, quantized with
tools/deployment/quantize_int8.py, scored with tools/test.py (the float32 checkpoint and the int8
graph, the same split and evaluator), and timed at deployment sizes (RetinaNet 800x1216, Semantic
FPN 512x512, the classifier 224x224): float32 PyTorch (the network's tensor outputs, as
exported), float32 ONNX Runtime and int8 ONNX Runtime, each the median of ``--repeats`` runs in
this process.

    python tools/analysis/int8_benchmark.py [--work-dir work_dirs/int8] [--out docs/int8.json]
                                            [--cases retinanet sem_fpn classifier] [--repeats 5]
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path[:0] = [ROOT, osp.join(ROOT, 'tools')]

from benchmark import median_seconds  # noqa: E402
from convmlp_mm.compat import cpu_int8_capability  # noqa: E402
from convmlp_mm.deployment import TensorGraph, build_model, export_onnx, ort_session  # noqa: E402

#: name: config, the metric, the input size timed, training options (the quickstart schedules)
CASES = {
    'retinanet': ('configs/quickstart/retinanet_convmlp-s_shapes.py', 'coco/bbox_mAP', (800, 1216), []),
    'sem_fpn': ('configs/quickstart/fpn_convmlp-s_shapes.py', 'mIoU', (512, 512), []),
    'classifier': ('configs/quickstart/convmlp-s_shapes-cls.py', 'accuracy/top1', (224, 224),
                   ['train_cfg.max_epochs=10', 'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=10']),
}
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--work-dir', default='work_dirs/int8', help='data, trainings and models (reused when there)')
parser.add_argument('--out', default='work_dirs/int8/int8.json')
parser.add_argument('--cases', nargs='+', choices=list(CASES), default=list(CASES))
parser.add_argument('--repeats', type=int, default=5)


def tool(work: str, *args: str) -> str:
    """Runs one of our tools in ``work`` and returns its output; exits with it on failure."""
    proc = subprocess.run([sys.executable, *args], cwd=work, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f'{" ".join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}')
    return proc.stdout + proc.stderr


def trained(work: str, name: str) -> str:
    """The checkpoint of case ``name``, trained in ``work/name`` unless it is there."""
    config, _, _, options = CASES[name]
    pointer = osp.join(work, name, 'last_checkpoint')
    if not osp.isfile(pointer):
        tool(work, osp.join(ROOT, 'tools/train.py'), osp.join(ROOT, config), '--work-dir', name,
             *(['--cfg-options', *options] if options else []))
    return osp.join(work, open(pointer).read().strip())


def score(work: str, name: str, weights: str) -> float:
    config, metric, _, _ = CASES[name]
    text = tool(work, osp.join(ROOT, 'tools/test.py'), osp.join(ROOT, config), weights, '--work-dir', name)
    return float(re.search(rf'^  {re.escape(metric)}: ([-\d.]+)$', text, re.M).group(1))


def latencies(work: str, name: str, checkpoint: str, int8: str, repeats: int) -> dict:
    """Seconds per image at the case's size: PyTorch float32, ONNX Runtime float32 and int8."""
    config, _, (h, w), _ = CASES[name]
    model, scope = build_model(osp.join(ROOT, config), checkpoint)
    graph = TensorGraph(model, scope)
    fp32 = osp.join(work, name, 'fp32.onnx')
    export_onnx(graph, fp32, (h, w))
    x = torch.rand(1, 3, h, w) * 4 - 2
    with torch.no_grad():
        pytorch = median_seconds(lambda: graph(x), repeats)
    sessions = {'onnxruntime_fp32': ort_session(fp32), 'onnxruntime_int8': ort_session(int8)}
    timed = {key: median_seconds(lambda s=s: s.run(None, {'image': x.numpy()}), repeats) for key, s in sessions.items()}
    return dict(pytorch_fp32=pytorch, **timed, fp32_onnx_mib=osp.getsize(fp32) / 2 ** 20)


def main() -> None:
    args = parser.parse_args()
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    tool(work, osp.join(ROOT, 'tools/make_shapes.py'))
    tool(work, osp.join(ROOT, 'tools/make_shapes.py'), '--classification')
    rows = []
    for name in args.cases:
        checkpoint = trained(work, name)
        int8 = osp.join(work, name, 'int8.onnx')
        tool(work, osp.join(ROOT, 'tools/deployment/quantize_int8.py'), osp.join(ROOT, CASES[name][0]), checkpoint,
             '--out', int8)
        report = json.load(open(int8 + '.json'))
        row = dict(case=name, checkpoint=osp.relpath(checkpoint, work), size=CASES[name][2],
                   fp32_metric=score(work, name, checkpoint), int8_metric=score(work, name, int8),
                   float_nodes=report['float_nodes'], agreement=report['agreement'],
                   quantized_nodes=report['quantizable'] - len(report['float_nodes']),
                   int8_mib=osp.getsize(int8) / 2 ** 20, most_sensitive=report['sensitivity'][:5],
                   **latencies(work, name, checkpoint, int8, args.repeats))
        row['speedup_over_pytorch_fp32'] = row['pytorch_fp32'] / row['onnxruntime_int8']
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != 'most_sensitive'}), flush=True)
    result = dict(machine=dict(int8=cpu_int8_capability(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                               threads=torch.get_num_threads(),
                               torch=torch.__version__, onnxruntime=__import__('onnxruntime').__version__),
                  rows=rows)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1, default=float)
    print(f'written: {args.out}')


if __name__ == '__main__':
    main()
