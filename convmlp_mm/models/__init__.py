"""Backbones (registered into mmdet, mmseg and mmpretrain on import) and classifiers."""
import importlib.util

from .base import MultiStageBackbone
from .classifier import MLPClassifier
from .convmlp import ConvMLP, PureMLP, mmpretrain_to_published, published_to_mmpretrain
from .fusion import fuse, prepare_inference

if importlib.util.find_spec('timm') is not None:
    from . import timm_models  # noqa: F401  (registers convmlp_s ... pure_mlp_l into timm)

__all__ = ['ConvMLP', 'PureMLP', 'fuse', 'prepare_inference', 'MultiStageBackbone', 'MLPClassifier', 'published_to_mmpretrain',
           'mmpretrain_to_published']
