"""Finished training runs side by side in the form of the paper's Tables 5-7 and Figure 3:
one table and one figure panel per system (RetinaNet, Mask R-CNN, Semantic FPN or any other
detector/segmentor), a row and a bar per backbone.

    python tools/analysis/compare_backbones.py WORK_DIR [WORK_DIR ...] [--out-dir DIR]

Each WORK_DIR is one run of ``tools/train.py`` (or ``tools/dist_train.sh``/``slurm_train.sh``):
its metrics are the last evaluation logged in its ``<timestamp>`` folders (the training's own
validation, or a later ``tools/test.py ... --work-dir WORK_DIR``), its config the one that
mmengine recorded beside that evaluation. Parameters are counted on the config's model
(``params``: all, ``trainable``: what its ``frozen_stages`` leave) and multiply-accumulates
(mmengine's FlopAnalyzer, the heads without post-processing) at the paper's input sizes: 800x1280
for detection, 512x512 for segmentation (``--input-size`` sets another). Writes ``compare.md``,
``compare.csv`` and ``compare.png`` into ``--out-dir``. Runs without the metrics of their system
are all named, with what each lacks, before anything is measured, and then nothing is written.
"""
import argparse
import csv
import glob
import io
import json
import math
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config

import convmlp_mm  # noqa: F401  (registers the backbones)
from convmlp_mm.analysis import TensorForward, count_macs, count_params
from convmlp_mm.mm import build_host_model

#: (column, logged key) per kind of evaluation: Table 5's columns for boxes, Table 6's for boxes
#: and masks, Table 7's for segmentation
BOX = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'), ('AP75', 'coco/bbox_mAP_75'),
       ('APs', 'coco/bbox_mAP_s'), ('APm', 'coco/bbox_mAP_m'), ('APl', 'coco/bbox_mAP_l'))
BOX_MASK = (('AP^b', 'coco/bbox_mAP'), ('AP50^b', 'coco/bbox_mAP_50'), ('AP75^b', 'coco/bbox_mAP_75'),
            ('AP^m', 'coco/segm_mAP'), ('AP50^m', 'coco/segm_mAP_50'), ('AP75^m', 'coco/segm_mAP_75'))
SEG = (('mIoU', 'mIoU'), )
#: the columns drawn in the figure, per kind
FIGURE = {BOX: ('AP', 'AP50', 'AP75'), BOX_MASK: ('AP^b', 'AP^m'), SEG: ('mIoU', )}
SYSTEM_NAMES = {'MaskRCNN': 'Mask R-CNN', 'EncoderDecoder': 'Semantic FPN'}
INPUT = {'mmdet': (800, 1280), 'mmseg': (512, 512)}

parser = argparse.ArgumentParser(description='Training runs side by side: table (Markdown, CSV) and figure.')
parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR', help='finished runs of tools/train.py')
parser.add_argument('--out-dir', default='work_dirs/compare', help='where compare.md/.csv/.png go')
parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                    help="the input for MACs (default: the paper's, 800x1280 detection, 512x512 segmentation)")


def last_evaluation(work_dir: str) -> Tuple[Dict[str, float], str]:
    """The newest logged evaluation of a run and the config recorded beside it.

    Args:
        work_dir: a work dir of ``tools/train.py``/``tools/test.py``.

    Returns:
        ``(metrics, config path)``: the metrics without mmengine's ``val/``/``test/`` prefixes
        (``{}`` when no line of the logs holds a COCO or mIoU metric) and the ``config.py`` of
        that run's ``<timestamp>/vis_data`` (else the config mmengine dumped into ``work_dir``).

    Raises:
        ValueError: ``work_dir`` is not a directory, or has no config.
    """
    if not osp.isdir(work_dir):
        raise ValueError(f'{work_dir}: not a directory; give the work dirs of finished tools/train.py runs')
    # <timestamp>/<timestamp>.json (tools/test.py) and <timestamp>/vis_data/*.json (training); the
    # folder names (%Y%m%d_%H%M%S) order the runs, whatever copying did to the files' times
    for run in sorted(glob.glob(osp.join(work_dir, '*', '')), reverse=True):
        records = []
        for path in glob.glob(osp.join(run, '*.json')) + glob.glob(osp.join(run, 'vis_data', '*.json')):
            with open(path) as f:
                records += [json.loads(line) for line in f if line.strip()]
        for record in sorted(records, key=lambda r: r.get('step', 0), reverse=True):
            record = {key.split('/', 1)[1] if key.startswith(('val/', 'test/')) else key: value
                      for key, value in record.items()}
            if 'mIoU' in record or any(key.startswith('coco/') for key in record):
                recorded = osp.join(run, 'vis_data', 'config.py')
                return record, recorded if osp.isfile(recorded) else dumped_config(work_dir)
    return {}, dumped_config(work_dir)


def dumped_config(work_dir: str) -> str:
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(configs) != 1:
        raise ValueError(f'{work_dir}: {len(configs)} configs (*.py) in it, {configs}; tools/train.py writes '
                         'one into its work dir, and a run with an evaluation records its own in '
                         '<timestamp>/vis_data/config.py')
    return configs[0]


def system_of(cfg: Config) -> Tuple[str, tuple]:
    """The system's name (the paper's where it has one) and its kind of evaluation."""
    model_type = cfg.model['type']
    name = SYSTEM_NAMES.get(model_type, model_type)
    if cfg.get('default_scope') == 'mmseg':
        neck = cfg.model.get('neck') or {}
        return (name if neck.get('type') == 'FPN' else f"{model_type} ({cfg.model.decode_head['type']})"), SEG
    with_masks = (cfg.model.get('roi_head') or {}).get('mask_head') is not None
    return name, (BOX_MASK if with_masks else BOX)


def backbone_name(cfg: Config) -> str:
    """``ConvMLP-S``, ``Pure-MLP-S``, ``ResNet-18`` (mmdet's ResNet, mmseg's ResNetV1c), or the type."""
    backbone = cfg.model['backbone']
    kind = backbone['type'].split('.')[-1]
    if kind in ('ConvMLP', 'PureMLP'):
        arch = backbone.get('arch', 's')
        return f"{'Pure-MLP' if kind == 'PureMLP' else kind}-{arch.upper() if isinstance(arch, str) else 'custom'}"
    if kind.startswith('ResNet') and 'depth' in backbone:
        return f"ResNet-{backbone['depth']}"
    return kind


def read_run(work_dir: str) -> dict:
    """One run's names and metrics (in %, None for pycocotools' -1: no ground truth of that size).

    Raises:
        ValueError: the run lacks a metric of its system, naming them and how to add them.
    """
    metrics, path = last_evaluation(work_dir)
    cfg = Config.fromfile(path)
    system, columns = system_of(cfg)
    missing = [key for _, key in columns if key not in metrics]
    if missing:
        found = ', '.join(sorted(k for k in metrics if k != 'step')) or 'no COCO or mIoU evaluation'
        raise ValueError(f'{work_dir}: {system} needs the metrics {", ".join(missing)} in its logs; found {found}. '
                         f'Finish the training (its last epoch evaluates) or run tools/test.py {path} CHECKPOINT '
                         f'--work-dir {work_dir}')
    scale = 1 if columns is SEG else 100  # mmseg logs percentages, mmdet fractions
    values = {name: metrics[key] * scale if metrics[key] >= 0 else None for name, key in columns}
    return dict(system=system, backbone=backbone_name(cfg), work_dir=work_dir, config=path, columns=columns,
                step=metrics.get('step'), **values)


def measure(row: dict, input_size: Optional[Tuple[int, int]]) -> None:
    """Adds the parameters (M) and GMACs of the run's config to ``row``."""
    model, scope = build_host_model(Config.fromfile(row['config']), row['config'])
    model.train()  # trainable counts follow frozen_stages
    params = count_params(model)
    h, w = input_size or INPUT[scope]
    with torch.no_grad():
        macs = count_macs(TensorForward(model, scope, h, w), (torch.rand(1, 3, h, w), ))['all']
    row.update(params=params['all'] / 1e6, trainable=params['trainable'] / 1e6, gmacs=macs / 1e9, input=f'{h}x{w}')


def number(value: Optional[float], digits: int) -> str:
    return '' if value is None else f'{value:.{digits}f}'


def markdown(rows: List[dict]) -> str:
    """One table per system, in the order the runs were given."""
    out = []
    for system in dict.fromkeys(row['system'] for row in rows):
        group = [row for row in rows if row['system'] == system]
        names = [name for name, _ in group[0]['columns']]
        out += [f'### {system}', '',
                f"| backbone | params (M) | trainable (M) | GMACs ({group[0]['input']}) | {' | '.join(names)} | run |",
                '|---' * (len(names) + 5) + '|']
        out += [f"| {row['backbone']} | {row['params']:.2f} | {row['trainable']:.2f} | {row['gmacs']:.1f} | "
                + ' | '.join(number(row[name], 1) or '–' for name in names) + f" | {row['work_dir']} |"
                for row in group]
        out.append('')
    return '\n'.join(out)


def csv_text(rows: List[dict]) -> str:
    """All runs in one table: every system's columns, empty where a system has none."""
    names = list(dict.fromkeys(name for row in rows for name, _ in row['columns']))
    fields = ['system', 'backbone', 'params_M', 'trainable_M', 'GMACs', 'input'] + names + ['step', 'work_dir']
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(fields)
    for row in rows:
        writer.writerow([row['system'], row['backbone'], f"{row['params']:.3f}", f"{row['trainable']:.3f}",
                         f"{row['gmacs']:.2f}", row['input']] + [number(row.get(n), 2) for n in names]
                        + [row['step'], row['work_dir']])
    return buffer.getvalue()


def figure(rows: List[dict], path: str) -> None:
    """Figure 3's form: a panel per system, its metrics on the x axis, a bar per backbone."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    systems = list(dict.fromkeys(row['system'] for row in rows))
    fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 3.6), squeeze=False)
    for ax, system in zip(axes[0], systems):
        group = [row for row in rows if row['system'] == system]
        names = FIGURE[group[0]['columns']]
        width = 0.8 / len(group)
        for i, row in enumerate(group):
            xs = [j + (i - (len(group) - 1) / 2) * width for j in range(len(names))]
            heights = [math.nan if row[name] is None else row[name] for name in names]
            bars = ax.bar(xs, heights, width, label=row['backbone'])
            ax.bar_label(bars, fmt='%.1f', fontsize=7)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(system)
        ax.set_ylabel('%')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format='png')
    plt.close(fig)


def main() -> None:
    args = parser.parse_args()
    rows, errors = [], []
    for work_dir in args.work_dirs:
        try:
            rows.append(read_run(work_dir))
        except ValueError as error:
            errors.append(str(error))
    if errors:
        sys.exit('compare_backbones: nothing written.\n' + '\n'.join(errors))
    for row in rows:
        measure(row, args.input_size)
    os.makedirs(args.out_dir, exist_ok=True)
    outputs = {'compare.csv': csv_text(rows), 'compare.md': markdown(rows)}
    figure(rows, osp.join(args.out_dir, 'compare.png.part'))
    for name, text in outputs.items():
        with open(osp.join(args.out_dir, name + '.part'), 'w') as f:
            f.write(text)
    for name in ('compare.png', *outputs):  # each file complete or absent
        os.replace(osp.join(args.out_dir, name + '.part'), osp.join(args.out_dir, name))
    print(outputs['compare.md'])
    print(f'written: {args.out_dir}/compare.md, compare.csv, compare.png')


if __name__ == '__main__':
    main()
