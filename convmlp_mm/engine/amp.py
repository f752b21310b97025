"""Mixed precision on every device: :class:`CPUAmpOptimWrapper`.

mmengine's ``AmpOptimWrapper`` asserts that a GPU (or NPU/MLU/MUSA) is there. This wrapper is
mmengine's wherever the run's device (mmengine's ``get_device()``) is not the CPU; on the CPU it
autocasts to bfloat16, without loss scaling (bfloat16 has float32's range)::

    optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=...)

``tools/train.py --amp`` selects it.
"""
import logging

import torch
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..compat import disabled_grad_scaler, emulated_bf16_warning


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``; where the run's device is the CPU, bfloat16 autocast and no
    loss scaling.

    Args:
        loss_scale, dtype, use_fsdp, **kwargs: as ``AmpOptimWrapper``'s (on the CPU, ``dtype`` may
            only be None or bfloat16, and ``loss_scale`` is not used).
    """

    def __init__(self, loss_scale='dynamic', dtype=None, use_fsdp: bool = False, **kwargs) -> None:
        if get_device() != 'cpu':
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'CPUAmpOptimWrapper(dtype={dtype!r}) on the CPU: only bfloat16 is supported')
        OptimWrapper.__init__(self, **kwargs)
        if emulated_bf16_warning():
            print_log(f'CPUAmpOptimWrapper: {emulated_bf16_warning()}', logger='current', level=logging.WARNING)
        self._scale_update_param = None
        self.loss_scaler = disabled_grad_scaler()
        self.cast_dtype = torch.bfloat16

    def load_state_dict(self, state_dict: dict) -> None:
        if not self.loss_scaler.is_enabled():  # a GPU run's scaler state means nothing here
            state_dict.pop('loss_scaler', None)
        super().load_state_dict(state_dict)
