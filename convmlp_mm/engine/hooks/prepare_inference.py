"""Testing a prepared model (``tools/test.py --amp``)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.fusion import prepare_inference


@HOOKS.register_module()
class PrepareInferenceHook(Hook):
    """Before testing, after the checkpoint is loaded: :func:`~convmlp_mm.prepare_inference` on
    the model (eval mode, our backbones fused, the heads' output layers in float32 under autocast,
    mmcv's RoIAlign fed NCHW float32; with ``channels_last`` the whole model in channels-last
    memory). For test runs only: the model is changed in place and cannot train afterwards.

    Args:
        channels_last (bool): Convert the whole model to channels-last memory. Defaults to True.
    """
    priority = 'VERY_LOW'

    def __init__(self, channels_last: bool = True) -> None:
        self.channels_last = channels_last

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        prepare_inference(model, self.channels_last)
