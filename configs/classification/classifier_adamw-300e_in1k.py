# The paper's ImageNet-1k recipe (Sec. 4.1), as the official repository's timm configs give it:
# 300 epochs plus 10 cool-down epochs at the minimum lr, 8 GPUs x 128 images; AdamW lr 5e-4 for
# the global batch of 1024, eps 1e-8, weight decay 0.05 (none on norms and biases, as timm);
# 5 linear warm-up epochs from 1e-6, cosine to 1e-5; label smoothing 0.1; model EMA, decay
# 0.99996; RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 (pixel mode), Mixup 0.8 and
# CutMix 1.0 (switch probability 0.5); bicubic random-resized crop (ratio 3/4-4/3), horizontal
# flip 0.5; mixed precision; evaluation resizes to 224/0.9 = 248 (bicubic), center-crops 224.
# mmpretrain's own pieces throughout. Every *_in1k config here inherits it and sets the backbone.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/convmlp_runtime.py',
]
custom_hooks = [
    dict(type='SafeCheckpointLoadHook'),
    # timm's ModelEmaV2 averages parameters and buffers; mmengine's momentum is 1 - decay.
    dict(type='EMAHook', momentum=4e-5, update_buffers=True, strict_load=True, priority='ABOVE_NORMAL'),
    dict(type='RandomStateHook'),
    dict(type='FiniteLossHook'),
]

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ConvMLP', arch='s', out_indices=-1, drop_path_rate=0.1),
    head=dict(type='MLPClsHead', num_classes=1000, in_channels=512,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    # mmpretrain's RandomBatchAugment picks one of the two per batch: switch probability 0.5.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# Our own visualizer entry: inherited through `mmpretrain::`, it carries a `_scope_` key, which
# mmpretrain's tools/visualization/browse_dataset.py passes on to the visualizer's constructor.
visualizer = dict(_delete_=True, type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])

crop_pct = 0.9
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(224 / crop_pct), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

lr, min_lr, warmup_lr = 5e-4, 1e-5, 1e-6
warmup_epochs, epochs, cooldown_epochs = 5, 300, 10
optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=dict(lr=lr))  # mmengine's AMP; bfloat16 on the CPU
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_lr / lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=min_lr, by_epoch=True, begin=warmup_epochs, end=epochs,
         T_max=epochs - warmup_epochs),
    # the cool-down: no scheduler after `epochs`, so the lr stays at min_lr
]
train_cfg = dict(_delete_=True, type='ResumableEpochBasedTrainLoop', max_epochs=epochs + cooldown_epochs,
                 val_interval=10)
default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))
# Other GPU counts: `tools/train.py --auto-scale-lr` scales lr linearly from 1024 images per step.
auto_scale_lr = dict(enable=False, base_batch_size=1024)
randomness = dict(seed=42)
