"""convmlp_mm: ConvMLP and Pure-MLP backbones for OpenMMLab 2.0 (mmdet, mmseg, mmpretrain) and timm.

Importing the package registers names and changes nothing else: the models into timm (when
installed), and, where mmengine is installed, the backbones and head into the installed host
libraries (:mod:`convmlp_mm.mm`) and the opt-in runtime parts under names of their own
(:mod:`convmlp_mm.engine`). In a config: ``custom_imports=dict(imports=['convmlp_mm'])``.

``convmlp_mm.ConvMLP`` and ``PureMLP`` are the registered backbones (``init_cfg`` included) where
mmengine is installed, and the plain torch models of :mod:`convmlp_mm.models` where it is not;
the first are subclasses of the second.
"""
import importlib.util

from .models import (CheckpointError, CheckpointNotFoundError, ConvMLP, MLPClassifier, PureMLP, fuse,
                     mmpretrain_to_published, prepare_inference, published_to_mmpretrain)

if importlib.util.find_spec('mmengine') is not None:
    from . import engine  # noqa: F401  (registers the runtime parts)
    from .mm import ConvMLP, PureMLP  # noqa: F811  (the same models as BaseModules, registered)

__version__ = '0.5.0'
__all__ = ['ConvMLP', 'PureMLP', 'MLPClassifier', 'fuse', 'prepare_inference', 'published_to_mmpretrain',
           'mmpretrain_to_published', 'CheckpointError', 'CheckpointNotFoundError']
