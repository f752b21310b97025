"""How configs find our models.

Our classes live in the ``convmlp_mm`` scope (a child of mmengine's root ``MODELS``) and are
added, under the same name, to the ``MODELS`` registry of every OpenMMLab library that is
installed: mmdet, mmseg and mmpretrain. So ``type='ConvMLP'`` works in a config of any of
them, and so does the cross-library form ``type='mmdet.ConvMLP'``.
"""
import importlib
from typing import List, Type

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='convmlp_mm', locations=['convmlp_mm.models'])

#: The host libraries whose ``MODELS`` registries receive our classes, when installed.
HOST_REGISTRIES = ('mmdet.registry', 'mmseg.registry', 'mmpretrain.registry')


def host_registries() -> List[Registry]:
    """The ``MODELS`` registries of the installed host libraries, ours first."""
    registries = [MODELS]
    for module_name in HOST_REGISTRIES:
        try:
            registries.append(importlib.import_module(module_name).MODELS)
        except ImportError:  # that library is not installed: nothing to register into
            continue
    return registries


def register_model(cls: Type) -> Type:
    """Class decorator: registers ``cls`` into our scope and every installed host library."""
    for registry in host_registries():
        registry.register_module(module=cls)
    return cls
