# Quickstart: a ConvMLP-S classifier trained from scratch on generated single-shape images
# (data/shapes_cls, made by `python tools/make_shapes.py --classification`: rectangle, ellipse,
# triangle at 64x64) on the CPU. It inherits the real ImageNet config; data, image size,
# schedule and the heavy regularisation (Mixup/CutMix, RandAugment, EMA) differ, since a
# 3-class toy trained for a few minutes needs none of it. For ImageNet use
# configs/classification/convmlp-s_8xb128-300e_in1k.py.
_base_ = '../classification/convmlp-s_8xb128-300e_in1k.py'

data_root = 'data/shapes_cls'
classes = ('rectangle', 'ellipse', 'triangle')
model = dict(backbone=dict(drop_path_rate=0.), head=dict(num_classes=3), train_cfg=None)
data_preprocessor = dict(num_classes=3)
custom_hooks = [dict(type='SafeCheckpointLoadHook'), dict(type='RandomStateHook'), dict(type='FiniteLossHook')]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.7, 1.0), backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/train.txt',
                 data_prefix='train', classes=classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/val.txt',
                 data_prefix='val', classes=classes, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 30
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs, T_max=max_epochs - 1,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
