"""Testing a prepared model (``tools/test.py --amp``)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.fusion import prepare_inference
from ..ops import mmcv_ops_for_prepared_models


@HOOKS.register_module()
class PrepareInferenceHook(Hook):
    """Before testing, after the checkpoint is loaded: :func:`~convmlp_mm.prepare_inference` on
    the model (eval mode, our backbones fused, with ``channels_last`` the whole model in
    channels-last memory), and mmcv's RoIAlign and NMS fed what their kernels read
    (:func:`~convmlp_mm.engine.ops.mmcv_ops_for_prepared_models`) until the test ends. For test runs
    only: the model is changed in place and cannot train afterwards.

    Args:
        channels_last (bool): Convert the whole model to channels-last memory. Defaults to True.
    """
    priority = 'VERY_LOW'

    def __init__(self, channels_last: bool = True) -> None:
        self.channels_last = channels_last
        self._ops = None

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        prepare_inference(model, self.channels_last)
        self._ops = mmcv_ops_for_prepared_models()
        self._ops.__enter__()

    def after_test(self, runner) -> None:
        if self._ops is not None:
            ops, self._ops = self._ops, None
            ops.__exit__(None, None, None)

    def after_run_raised(self, runner) -> None:
        self.after_test(runner)
