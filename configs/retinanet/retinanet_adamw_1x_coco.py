# The paper's RetinaNet recipe (Sec. 4.5): mmdet's RetinaNet R-50 FPN 1x on COCO 2017 (12 epochs,
# steps at 8 and 11, 500-iteration linear warm-up, 1333x800, 8 GPUs x 2 images) with AdamW,
# lr 1e-4, weight decay 1e-4. Every retinanet_* config here inherits it and sets the backbone.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['convmlp_mm'], allow_failed_imports=False)
# Resumed runs draw the random numbers of uninterrupted ones; a NaN/inf loss stops training before
# the optimizer step (FiniteLossHook(action='skip') skips such steps). See convmlp_mm/hooks.py.
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteLossHook')]

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
# Other GPU counts: `tools/train.py --auto-scale-lr` scales lr linearly from 16 images per step.
auto_scale_lr = dict(enable=False, base_batch_size=16)
