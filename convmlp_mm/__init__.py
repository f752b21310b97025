"""convmlp_mm: ConvMLP and Pure-MLP backbones for OpenMMLab 2.0 (mmdet, mmseg, mmpretrain) and timm.

Importing the package applies the compatibility shims (:mod:`convmlp_mm.compat`)
once, then registers the models. In a config: ``custom_imports=dict(imports=['convmlp_mm'])``.
"""
from . import compat  # noqa: F401  (first: the shims must be in place before anything loads)
from . import checkpoint  # noqa: F401  (every checkpoint read weights-only, with an allowlist)
from . import hooks  # noqa: F401  (RandomStateHook, FiniteLossHook, PreemptionHook, StallWatchdogHook)
from . import optim  # noqa: F401  (BackboneLayerDecayOptimWrapperConstructor)
from .checkpoint import trust_checkpoint
from .models import ConvMLP, MLPClassifier, PureMLP, fuse, mmpretrain_to_published, prepare_inference, published_to_mmpretrain

__version__ = '0.1.0'
__all__ = ['trust_checkpoint', 'ConvMLP', 'PureMLP', 'MLPClassifier', 'fuse', 'prepare_inference', 'published_to_mmpretrain', 'mmpretrain_to_published']
