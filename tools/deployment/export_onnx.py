"""Export a config's backbone, single-stage detector, segmentor or classifier to ONNX.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W] [--part {model,backbone}]
                                           [--check]

Without a checkpoint the model has random weights (nothing is downloaded). Batch, height and
width are dynamic; the graph takes normalised images (the data preprocessor's output) and
returns the network's tensors before post-processing (see :mod:`convmlp_mm.deployment`).
The graph is written by torch's dynamo exporter from torch 2.9 on (the TorchScript-based one
before; :data:`convmlp_mm.compat.ONNX_DYNAMO_EXPORTER`). ``--check`` runs the file in ONNX
Runtime at three inputs (the traced size, an odd one, and a batch of two at a third size) and
compares with PyTorch (float32: max relative error under 1e-4). Mask R-CNN and other two-stage detectors need
mmdeploy; ``--part backbone`` exports their backbone.
"""
import argparse
import importlib.util
import os
import os.path as osp
import sys

import torch

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.cli import checkpoint_argument
from convmlp_mm.compat import ONNX_DYNAMO_EXPORTER
from convmlp_mm.models.weights import CheckpointError
from convmlp_mm.deployment import (PARTS, ExportError, TensorGraph, build_model, export_onnx, max_relative_errors,
                                   ort_session)

TOLERANCE = 1e-4
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('config')
parser.add_argument('checkpoint', nargs='?', help='weights (default: random, no download)')
parser.add_argument('--out', required=True, help='the .onnx file to write')
parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                    help='the input size the graph is traced at (default 512 512; any size runs)')
parser.add_argument('--part', choices=PARTS, default='model', help='the whole network or its backbone')
parser.add_argument('--check', action='store_true', help='compare ONNX Runtime with PyTorch at three sizes')


def main() -> None:
    args = parser.parse_args()
    h, w = args.shape
    if min(h, w) < 32:
        parser.error(f'--shape {h} {w}: height and width must be at least 32 (the stride of F4)')
    needed = ['onnx'] + (['onnxscript'] if ONNX_DYNAMO_EXPORTER else []) + (['onnxruntime'] if args.check else [])
    for package in needed:
        if importlib.util.find_spec(package) is None:
            parser.exit(2, f"error: {package} is not installed: pip install 'convmlp_mm[deploy]' "
                           '(onnx, onnxscript, onnxruntime)\n')
    if args.checkpoint:
        checkpoint_argument(parser, args.checkpoint)
    try:
        model, scope = build_model(args.config, args.checkpoint)
        graph = TensorGraph(model, scope, args.part)
    except (CheckpointError, ExportError, ValueError) as error:
        parser.exit(2, f'error: {error}\n')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    partial = args.out + '.partial'
    export_onnx(graph, partial, (h, w))
    os.replace(partial, args.out)  # a complete file or none
    print(f'{args.out}: {", ".join(graph.names)}')
    if args.check:
        session = ort_session(args.out)
        worst = 0.
        # the second size odd (ceil sizes at every stride), the third a batch of two
        for n, size in ((1, (h, w)), (1, (h * 3 // 4 + 1, w * 3 // 4 + 5)), (2, (h * 5 // 4, w + 32))):
            torch.manual_seed(0)
            errors = max_relative_errors(graph, session, torch.rand(n, 3, *size) * 4 - 2)
            worst = max(worst, *errors.values())
            print(f'check {n}x{size[0]}x{size[1]}: max relative error ' +
                  ', '.join(f'{name} {e:.2e}' for name, e in errors.items()))
        if worst >= TOLERANCE:
            sys.exit(f'error: ONNX Runtime differs from PyTorch by {worst:.2e} (tolerance {TOLERANCE:g})')
        print(f'check passed: ONNX Runtime matches PyTorch within {worst:.2e} (tolerance {TOLERANCE:g})')


if __name__ == '__main__':
    main()
