"""The models layer, torch only: the ConvMLP family, the timm classifier, the published-layout
converter and inference-time fusion. Importing it registers ``convmlp_s`` ... ``pure_mlp_l``
into timm when timm is installed, and nothing else."""
import importlib.util

from .classifier import MLPClassifier
from .convmlp import ConvMLP, PureMLP, mmpretrain_to_published, published_to_mmpretrain
from .fusion import fuse, prepare_inference
from .weights import CheckpointError, CheckpointNotFoundError, read_checkpoint

if importlib.util.find_spec('timm') is not None:
    from . import timm_models  # noqa: F401  (registers convmlp_s ... pure_mlp_l into timm)

__all__ = ['ConvMLP', 'PureMLP', 'MLPClassifier', 'fuse', 'prepare_inference', 'published_to_mmpretrain',
           'mmpretrain_to_published', 'CheckpointError', 'CheckpointNotFoundError', 'read_checkpoint']
