"""A checkpoint that mmengine has just read fits the model exactly, or the run stops before any
weight is loaded."""
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS

from ...models.weights import check_state_dict_fits, unwrap_state_dict


@HOOKS.register_module()
class CheckpointFitsHook(Hook):
    """Registered by ``tools/train.py`` when it resumes and by ``tools/test.py`` (or
    ``custom_hooks=[dict(type='CheckpointFitsHook', filename=...)]``). mmengine loads
    with ``strict=False`` (missing and unexpected keys only logged); a resumed run must continue
    the same model and a test must evaluate the checkpoint's weights, so the checkpoint mmengine
    has just read must fit the model (unwrapped from DDP and test-time augmentation) exactly, or
    :class:`CheckpointError` (keys, both shapes) stops the run before any weight is loaded.

    Args:
        filename (str): The checkpoint, for the message.
    """
    priority = 'VERY_HIGH'

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):  # DDP, --tta: mmengine loads the inner model
            model = model.module
        check_state_dict_fits(model, unwrap_state_dict(checkpoint, self.filename), self.filename)
