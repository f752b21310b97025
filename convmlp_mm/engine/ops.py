"""mmcv's RoIAlign and NMS around prepared models: :func:`mmcv_ops_for_prepared_models`.

A model after :func:`convmlp_mm.prepare_inference` computes in channels-last memory, and under
CPU autocast in bfloat16. Two of mmcv 2.1's CPU kernels do not take that: ``roi_align`` (Mask
R-CNN's RoI extractors) reads its input's memory as contiguous NCHW without checking (a
channels-last map gave wrong RoI features, max difference 0.83 on uniform input) and has no
bfloat16 kernel; ``NMSop`` (every detector's NMS) takes float32 boxes and scores only. Inside
the context, ``mmcv.ops.roi_align.roi_align`` gets a contiguous NCHW input (in float32 on the CPU
for half types, the result cast back) and ``NMSop.forward`` float32 boxes and scores on the CPU;
on exit mmcv's own functions are back. ``PrepareInferenceHook`` (``tools/test.py --amp``) and
``tools/infer.py --amp`` enter it.
"""
import importlib
from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def mmcv_ops_for_prepared_models() -> Iterator[None]:
    """Within: mmcv's ``roi_align`` and ``NMSop.forward`` accept channels-last and half inputs."""
    roi_module = importlib.import_module('mmcv.ops.roi_align')  # the module: mmcv.ops.roi_align is its function
    nms_module = importlib.import_module('mmcv.ops.nms')
    # mmcv's own, also where a context a run that raised left entered still has them replaced
    roi_align = getattr(roi_module.roi_align, 'mmcv_function', roi_module.roi_align)
    nms_forward = nms_module.NMSop.__dict__['forward']
    nms_forward = getattr(nms_forward.__func__, 'mmcv_function', nms_forward)

    def contiguous_roi_align(input: torch.Tensor, rois: torch.Tensor, *args):
        if input.device.type == 'cpu' and input.dtype in (torch.bfloat16, torch.float16):
            return roi_align(input.float().contiguous(), rois.float(), *args).to(input.dtype)
        return roi_align(input.contiguous(), rois, *args)

    def float_nms_forward(ctx, bboxes: torch.Tensor, scores: torch.Tensor, *args) -> torch.Tensor:
        if bboxes.device.type == 'cpu':
            bboxes, scores = bboxes.float(), scores.float()
        return nms_forward.__func__(ctx, bboxes, scores, *args)

    contiguous_roi_align.mmcv_function, float_nms_forward.mmcv_function = roi_align, nms_forward
    roi_module.roi_align = contiguous_roi_align
    nms_module.NMSop.forward = staticmethod(float_nms_forward)
    try:
        yield
    finally:
        roi_module.roi_align = roi_align
        nms_module.NMSop.forward = nms_forward
