"""Parameters and MACs of a config's model at a given input shape, of every backbone, or of
the paper's Table 2 (ours beside the paper's).

    python tools/analysis/complexity.py CONFIG [CONFIG ...] [--shape H W]
    python tools/analysis/complexity.py --backbones [--shape 224 224]
    python tools/analysis/complexity.py --table2

MACs are counted by mmengine's FlopAnalyzer on one forward pass (``mode='tensor'``: the
detector's heads without post-processing); see :mod:`convmlp_mm.analysis` for the columns.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import Config

import convmlp_mm  # noqa: F401  (registers the backbones)
from convmlp_mm import ConvMLP, MLPClassifier, PureMLP
from convmlp_mm.mm import build_host_model
from convmlp_mm.analysis import TensorForward, count_macs, count_params

parser = argparse.ArgumentParser(description='Parameters and MACs of models.')
parser.add_argument('configs', nargs='*', help='config files (mmdet, mmseg or mmpretrain)')
parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='input size (default 1280x800 for '
                    'detection, 512x512 for segmentation, 224x224 for backbones)')
parser.add_argument('--backbones', action='store_true',
                    help='ConvMLP and Pure-MLP S/M/L with the 1000-class head, and their backbones')
parser.add_argument('--table2', action='store_true',
                    help="Table 2's seven rows at 224x224 with the 1000-class head, ours beside the paper's")

HEADER = ('| model | input | params (M) | trainable (M) | GMACs conv+linear | GMACs ptflops-2021 | GMACs all |\n'
          '|---|---|---|---|---|---|---|')

#: Table 2 of the paper: row -> (epochs, params (M), GMACs, top-1 (%)); the arch is ``table2-row{row}``.
TABLE2 = {1: (100, 7.88, 1.47, 63.29), 2: (100, 7.89, 1.59, 66.69), 3: (100, 8.71, 1.65, 69.56),
          4: (100, 7.91, 1.59, 73.84), 5: (100, 8.73, 1.65, 74.04), 6: (300, 8.73, 1.65, 76.33),
          7: (300, 9.02, 2.40, 76.81)}
TABLE2_HEADER = ('| row | stem_stage | downsample | dwconv | epochs | params (M) | paper | GMACs ptflops-2021 '
                 '| GMACs conv+linear | paper | paper top-1 (%) |\n|---|---|---|---|---|---|---|---|---|---|---|')


def row(name: str, model: torch.nn.Module, h: int, w: int) -> str:
    params = count_params(model)
    macs = count_macs(model, (torch.rand(1, 3, h, w), ))
    return (f"| {name} | {h}x{w} | {params['all'] / 1e6:.2f} | {params['trainable'] / 1e6:.2f} "
            f"| {macs['conv+linear'] / 1e9:.3f} | {macs['ptflops-2021'] / 1e9:.3f} | {macs['all'] / 1e9:.3f} |")


def table2() -> str:
    """Table 2 side by side: our parameters and MACs (both conventions), the paper's numbers."""
    lines = [TABLE2_HEADER]
    for index, (epochs, params_m, gmacs, top1) in TABLE2.items():
        model = MLPClassifier('ConvMLP', f'table2-row{index}')
        cfg = model.backbone.arch_cfg
        macs = count_macs(model, (torch.rand(1, 3, 224, 224), ))
        lines.append(f"| {index} | {cfg['stem_stage']} | {cfg['downsample']} | {cfg['dwconv']} | {epochs} "
                     f"| {count_params(model)['all'] / 1e6:.2f} | {params_m:.2f} | {macs['ptflops-2021'] / 1e9:.3f} "
                     f"| {macs['conv+linear'] / 1e9:.3f} | {gmacs:.2f} | {top1:.2f} |")
    return '\n'.join(lines)


def config_row(path: str, shape) -> str:
    model, scope = build_host_model(Config.fromfile(path), path)
    model.train()  # trainable counts follow frozen_stages
    h, w = shape or ((800, 1280) if scope == 'mmdet' else (512, 512) if scope == 'mmseg' else (224, 224))
    name = osp.splitext(osp.basename(path))[0]
    if scope == 'mmpretrain':
        return row(name, model, h, w)
    return row(name, TensorForward(model, scope, h, w), h, w)


def main() -> None:
    args = parser.parse_args()
    if not args.configs and not args.backbones and not args.table2:
        parser.error('give config files, --backbones or --table2')
    if args.table2:
        print(table2())
        if not args.configs and not args.backbones:
            return
    print(HEADER)
    if args.backbones:
        h, w = args.shape or (224, 224)
        for family in (ConvMLP, PureMLP):
            for arch in 'sml':
                name = f'{family.__name__}-{arch.upper()}'
                print(row(f'{name} (1000 classes)', MLPClassifier(family.__name__, arch), h, w))
                print(row(f'{family.__name__}-{arch.upper()} backbone', family(arch), h, w))
    for path in args.configs:
        print(config_row(path, args.shape))


if __name__ == '__main__':
    main()
