"""Saliency maps of a classifier (the paper's Appendix A, Figure 5): the gradient of the
predicted class score with respect to the input image.

    python tools/visualize_saliency.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out saliency.png]

Each image goes through the config's test pipeline and data preprocessor; the figure shows,
per image, the input with the predicted class and its probability, the saliency (the largest
absolute gradient over the colour channels, scaled to [0, 1]) and the saliency over the image.
"""
import argparse
import os
import os.path as osp
from typing import List, Tuple

import matplotlib
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.models.weights import CheckpointError
from convmlp_mm.data.checks import DatasetError, check_image
from convmlp_mm.engine import safe_checkpoint_loading
from convmlp_mm.cli import TRUST_HELP, checkpoint_argument, trust_from
from convmlp_mm.mm import check_scope

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('config', help='an mmpretrain classification config')
parser.add_argument('checkpoint')
parser.add_argument('images', nargs='+')
parser.add_argument('--out', default='outputs/saliency.png')
parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE[:SHA256]', help=TRUST_HELP)


def saliency(model: torch.nn.Module, pipeline: Compose, path: str) -> Tuple[np.ndarray, np.ndarray, int, float]:
    """(image HxWx3 RGB uint8 as the model sees it, saliency HxW in [0, 1], class, probability)."""
    packed = pipeline(dict(img_path=path))
    data = model.data_preprocessor(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]), False)
    x = data['inputs'].detach().requires_grad_(True)  # (1, 3, H, W), normalised
    logits = model(x, mode='tensor')[0]
    probs = logits.softmax(dim=-1)
    label = int(probs.argmax())
    logits[label].backward()  # the class score (logit), as in Simonyan et al.
    grad = x.grad[0].abs().amax(dim=0)  # max over channels: (H, W)
    grad = (grad / grad.max().clamp(min=1e-12)).numpy()
    image = packed['inputs'].permute(1, 2, 0).numpy()  # CHW -> HWC, the pipeline's BGR
    return np.ascontiguousarray(image[..., ::-1]), grad, label, float(probs[label].detach())


def draw(rows: List[Tuple[str, np.ndarray, np.ndarray, str]], out: str) -> None:
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for (name, image, grad, title), ax in zip(rows, axes):
        ax[0].imshow(image)
        ax[0].set_title(f'{name}\n{title}', fontsize=7)
        ax[1].imshow(grad, cmap='hot', vmin=0, vmax=1)
        ax[1].set_title('saliency', fontsize=7)
        ax[2].imshow(image)
        ax[2].imshow(grad, cmap='hot', alpha=0.6, vmin=0, vmax=1)
        ax[2].set_title('overlay', fontsize=7)
        for a in ax:
            a.axis('off')
    fig.tight_layout()
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parser.parse_args()
    checkpoint_argument(parser, args.checkpoint)
    for path in args.images:
        if not osp.isfile(path):
            parser.error(f'{path}: file not found')
    cfg = Config.fromfile(args.config)
    try:
        if check_scope(cfg, args.config) != 'mmpretrain':
            raise ValueError(f'{args.config}: saliency maps need a classification (mmpretrain) config')
        for path in args.images:
            check_image(path)
    except (ValueError, DatasetError) as error:
        parser.exit(2, f'error: {error}\n')
    from mmpretrain.apis import init_model
    try:
        trust_from(cfg, args.trust_checkpoint)
        with safe_checkpoint_loading():
            model = init_model(cfg, args.checkpoint, device='cpu').eval()
    except (CheckpointError, ValueError) as error:
        parser.exit(1, f'error: {error}\n')
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # the pipeline's transforms are mmpretrain's
        pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    classes = model._dataset_meta.get('classes')  # set by mmpretrain's init_model from the checkpoint
    rows = []
    for path in args.images:
        image, grad, label, prob = saliency(model, pipeline, path)
        name = classes[label] if classes else str(label)
        rows.append((osp.basename(path), image, grad, f'predicted {name} ({prob:.2f})'))
        print(f'{path}: {name} {prob:.3f}')
    draw(rows, args.out)
    print(args.out)


if __name__ == '__main__':
    main()
