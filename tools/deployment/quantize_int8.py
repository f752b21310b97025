"""Post-training int8 model of a config's network (or backbone), calibrated on its own data.

    python tools/deployment/quantize_int8.py CONFIG CHECKPOINT --out FILE.onnx [--calib-images N]
                                             [--split {val,test,train}] [--part {model,backbone}]
                                             [--target CORRELATION] [--max-float N] [--sensitivity-images N]

Exports the network as tools/deployment/export_onnx.py does (RetinaNet, Semantic FPN, a
classifier; any config's backbone with ``--part backbone``), calibrates activation ranges on the
N images drawn (seed 0) from the config's val (or train) loader, quantizes convolutions and matrix products
to int8 with ONNX Runtime (QDQ), and where the outputs then correlate with the float32 ones less
than ``--target`` on the calibration images, measures each node's sensitivity (the output
correlation with that node alone in int8) and leaves the most sensitive nodes in float32, one at
a time, until they reach it (see :mod:`convmlp_mm.quantization`). Writes FILE
and FILE.json (per-node sensitivity, the float32 nodes, agreement, sizes). Evaluate it with
``tools/test.py CONFIG FILE.onnx``.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import tempfile

from mmengine.config import Config

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.cli import checkpoint_argument
from convmlp_mm.deployment import PARTS, ExportError, TensorGraph, build_model, export_onnx
from convmlp_mm.models.weights import CheckpointError

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('config')
parser.add_argument('checkpoint', help='the trained weights')
parser.add_argument('--out', required=True, help='the int8 .onnx file to write')
parser.add_argument('--calib-images', type=int, default=32, help='calibration images (default 32)')
parser.add_argument('--split', choices=('val', 'test', 'train'), default='val',
                    help="the data loader the calibration images come from (default val; train runs the test "
                         'pipeline)')
parser.add_argument('--part', choices=PARTS, default='model', help='the whole network or its backbone')
parser.add_argument('--target', type=float, default=0.995,
                    help='output correlation with float32 to reach by leaving nodes in float32 (default 0.995)')
parser.add_argument('--max-float', type=int, default=16, help='at most this many nodes left in float32 (default 16)')
parser.add_argument('--sensitivity-images', type=int, default=8,
                    help='calibration images the per-node sensitivity runs on (default 8)')


def write(graph: TensorGraph, args, inputs, folder: str) -> dict:
    """Exports, prepares and quantizes into ``args.out``; returns the report."""
    from convmlp_mm import quantization
    fp32, prepared = osp.join(folder, 'fp32.onnx'), osp.join(folder, 'prepared.onnx')
    export_onnx(graph, fp32, inputs[0].shape[-2:])
    quantization.prepare_for_quantization(fp32, prepared)
    partial = args.out + '.partial.onnx'
    report = quantization.choose_float_nodes(prepared, partial, inputs, args.target, args.max_float,
                                             args.sensitivity_images)
    os.replace(partial, args.out)  # a complete file or none
    report.update(config=args.config, checkpoint=args.checkpoint, part=args.part, calib_images=len(inputs),
                  split=args.split, target=args.target, outputs=graph.names,
                  fp32_mib=osp.getsize(prepared) / 2 ** 20, int8_mib=osp.getsize(args.out) / 2 ** 20)
    return report


def main() -> None:
    args = parser.parse_args()
    for package in ('onnx', 'onnxruntime'):
        if importlib.util.find_spec(package) is None:
            parser.exit(2, f"error: {package} is not installed: pip install 'convmlp_mm[deploy]' (onnx, onnxruntime)\n")
    if args.calib_images < 1 or args.max_float < 0 or not 0 < args.target <= 1:
        parser.error(f'--calib-images {args.calib_images}, --max-float {args.max_float}, --target {args.target}: '
                     'expected at least 1 image, 0 or more nodes and a correlation in (0, 1]')
    checkpoint_argument(parser, args.checkpoint)
    try:
        model, scope = build_model(args.config, args.checkpoint)
        graph = TensorGraph(model, scope, args.part)
        from convmlp_mm.quantization import calibration_inputs
        inputs = calibration_inputs(Config.fromfile(args.config), model, args.calib_images, args.split)
    except (CheckpointError, ExportError, ValueError) as error:
        parser.exit(2, f'error: {error}\n')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        report = write(graph, args, inputs, folder)
    with open(args.out + '.json', 'w') as f:
        json.dump(report, f, indent=1)
    print(f"{args.out}: int8, {report['int8_mib']:.1f} MiB ({report['int8_mib'] / report['fp32_mib']:.0%} of "
          f"float32), {len(report['float_nodes'])} of {report['quantizable']} quantizable nodes in float32, "
          f"output correlation {report['agreement']:.5f} (all int8: {report['all_int8_agreement']:.5f})")
    if report['agreement'] < args.target:
        print(f'warning: --target {args.target} not reached with {args.max_float} nodes in float32; check the '
              'metric with tools/test.py or allow more with --max-float', flush=True)


if __name__ == '__main__':
    main()
