# The paper's Semantic FPN recipe (Sec. 4.6, following PVT): mmseg's Semantic FPN (ResNetV1c-50) on
# ADE20K, 512x512 random crops, 8 GPUs x 2 images, 40k iterations, AdamW lr 2e-4, weight decay
# 1e-4, poly decay (power 0.9) to 0. Every fpn_* config here inherits it and sets the backbone.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', '../_base_/convmlp_runtime.py']
# The runtime parts (configs/_base_/convmlp_runtime.py): resumable loop, atomic checkpoint files.

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000, backend_args=dict(backend='atomic_local')))
# Other GPU counts: `tools/train.py --auto-scale-lr` scales lr linearly from 16 images per step.
auto_scale_lr = dict(enable=False, base_batch_size=16)
