# The paper's Mask R-CNN recipe (Sec. 4.5): mmdet's Mask R-CNN R-50 FPN 1x on COCO 2017 (12 epochs,
# steps at 8 and 11, 500-iteration linear warm-up, 1333x800, 8 GPUs x 2 images) with AdamW,
# lr 1e-4, weight decay 1e-4. Every mask-rcnn_* config here inherits it and sets the backbone.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/convmlp_runtime.py']
# The runtime parts (configs/_base_/convmlp_runtime.py): resumable loop, atomic checkpoint files.
train_cfg = dict(type='ResumableEpochBasedTrainLoop')
default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
# Other GPU counts: `tools/train.py --auto-scale-lr` scales lr linearly from 16 images per step.
auto_scale_lr = dict(enable=False, base_batch_size=16)
