"""Draw a detection, segmentation or classification checkpoint's predictions on any images, as PNG files.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir DIR] [--score-thr 0.3] [--amp]
                          [--montage FILE] [--device DEVICE] [--cfg-options KEY=VALUE ...]

Uses mmdet's / mmseg's / mmpretrain's inference APIs and the config's visualizer; grayscale and
RGBA files are read as colour images. The checkpoint must fit the config's model exactly (the
hosts' inference APIs would load it with missing keys only logged). ``--amp`` prepares the model for inference
(:func:`convmlp_mm.prepare_inference`) and runs it under autocast (bfloat16 on the CPU, float16 on
GPUs).
"""
import argparse
import os
import os.path as osp
from typing import List

import mmcv
import numpy as np
import torch
from mmengine.config import Config, DictAction

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm import prepare_inference
from convmlp_mm.compat import emulated_bf16_warning
from convmlp_mm.data.checks import DatasetError, check_image
from convmlp_mm.engine import safe_checkpoint_loading
from convmlp_mm.engine.checkpoint import load_checkpoint
from convmlp_mm.models.weights import CheckpointError, check_state_dict_fits, unwrap_state_dict
from convmlp_mm.cli import TRUST_HELP, checkpoint_argument, trust_from
from convmlp_mm.engine import keep_freed_memory
from convmlp_mm.mm import check_scope

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('config')
parser.add_argument('checkpoint')
parser.add_argument('images', nargs='+')
parser.add_argument('--out-dir', default='outputs/predictions', help='where the PNGs go')
parser.add_argument('--score-thr', type=float, default=0.3, help='detections below this score are not drawn')
parser.add_argument('--device', default='cpu')
parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE[:SHA256]', help=TRUST_HELP)
parser.add_argument('--amp', action='store_true', help='autocast: bfloat16 on the CPU, float16 on GPUs')
parser.add_argument('--montage', help='also write all pictures, enlarged, into this one PNG')
parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. test_dataloader.dataset.pipeline.1.scale="(640,480)"')


def montage(files, out_file: str, columns: int = 4, scale: int = 3) -> None:
    """The PNGs in ``files`` side by side, enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image
    tiles = [Image.open(f).convert('RGB') for f in files]
    w, h = max(t.width for t in tiles) * scale, max(t.height for t in tiles) * scale
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new('RGB', (w * min(columns, len(tiles)), h * rows), 'white')
    for i, tile in enumerate(tiles):
        big = tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
        sheet.paste(big, ((i % columns) * w, (i // columns) * h))
    sheet.save(out_file)


def classify(model, image):
    """mmpretrain's inference on one BGR image: its DataSample (pred_label, pred_score)."""
    from mmpretrain.apis import ImageClassificationInferencer
    return ImageClassificationInferencer(model)(image, return_datasamples=True)[0]


def load_model(cfg: Config, checkpoint: str, device: str):
    """(model, inference function, visualizer registry) for the config's library."""
    if check_scope(cfg, 'config') == 'mmpretrain':
        from mmpretrain.apis import init_model
        from mmpretrain.registry import VISUALIZERS
        return init_model(cfg, checkpoint, device=device), classify, VISUALIZERS
    if check_scope(cfg, 'config') == 'mmdet':
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        return init_detector(cfg, checkpoint, device=device), inference_detector, VISUALIZERS
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS
    return init_model(cfg, checkpoint, device=device), inference_model, VISUALIZERS


def check_images(paths: List[str]) -> None:
    """Exits with the first image that is missing or unreadable."""
    for path in paths:
        if not osp.isfile(path):
            parser.error(f'{path}: file not found')
    for path in paths:
        try:
            check_image(path)  # readable, at least 32x32; grayscale and RGBA files are read as colour
        except DatasetError as error:
            parser.exit(2, f'error: {error}\n')


def load(cfg: Config, args) -> tuple:
    """The model (prepared for inference under ``--amp``), the host's inference function and its
    visualizer registry; exits naming the checkpoint when it cannot be read or does not fit."""
    try:
        trust_from(cfg, args.trust_checkpoint)
        with safe_checkpoint_loading():  # the host's init_model reads the checkpoint weights-only
            model, infer, visualizers = load_model(cfg, args.checkpoint, args.device)
        state = unwrap_state_dict(load_checkpoint(args.checkpoint, map_location='cpu'), args.checkpoint)
        check_state_dict_fits(model, state, args.checkpoint)
    except (CheckpointError, ValueError) as error:
        parser.exit(1, f'error: {error}\n')
    parts = ['safe_checkpoint_loading']
    if args.amp:
        prepare_inference(model)
        parts += ['prepare_inference']
    print('convmlp_mm runtime parts: ' + ', '.join(parts), flush=True)
    if args.amp and torch.device(args.device).type == 'cpu' and emulated_bf16_warning():
        print(f'warning: --amp: {emulated_bf16_warning()}', flush=True)
    return model, infer, visualizers


def draw(visualizer, scope: str, image: np.ndarray, result, out_file: str, score_thr: float) -> None:
    """Writes ``result`` drawn over ``image`` (BGR) to ``out_file``."""
    if scope == 'mmpretrain':  # small images: drawn at 4x so that the label fits
        visualizer.visualize_cls(mmcv.bgr2rgb(image), result, classes=visualizer.dataset_meta.get('classes'),
                                 draw_gt=False, rescale_factor=max(1., 256 / max(image.shape[:2])),
                                 out_file=out_file)
    else:
        extra = dict(pred_score_thr=score_thr) if scope == 'mmdet' else {}
        visualizer.add_datasample(osp.basename(out_file), mmcv.bgr2rgb(image), result, draw_gt=False, show=False,
                                  out_file=out_file, **extra)


def main() -> None:
    args = parser.parse_args()
    keep_freed_memory()
    checkpoint_argument(parser, args.checkpoint)
    check_images(args.images)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    scope = check_scope(cfg, args.config)
    model, infer, visualizers = load(cfg, args)
    device_type = torch.device(args.device).type
    autocast_dtype = torch.bfloat16 if device_type == 'cpu' else torch.float16
    visualizer = visualizers.build(dict(cfg.visualizer, name='infer', vis_backends=None))
    # mmdet and mmseg models carry dataset_meta; mmpretrain's init_model sets _dataset_meta
    visualizer.dataset_meta = model.dataset_meta if hasattr(model, 'dataset_meta') else model._dataset_meta
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for path in args.images:
        image = mmcv.imread(path)  # BGR, as the pipelines read it
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=args.amp):
            result = infer(model, image)
        written.append(osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png'))
        draw(visualizer, scope, image, result, written[-1], args.score_thr)
        print(written[-1])
    if args.montage:
        montage(written, args.montage, scale=1 if scope == 'mmpretrain' else 3)
        print(args.montage)


if __name__ == '__main__':
    main()
