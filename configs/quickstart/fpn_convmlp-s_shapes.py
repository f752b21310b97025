# Quickstart: Semantic FPN with ConvMLP-S, trained from scratch on the generated shapes dataset
# (data/shapes/ade, made by `python tools/make_shapes.py`) at 160x128 on the CPU.
# Only data, image size and schedule differ from the real config; for ADE20K use
# configs/sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py.
_base_ = '../sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py'

data_root = 'data/shapes/ade'
metainfo = dict(classes=('background', 'rectangle', 'ellipse', 'triangle'),
                palette=[(120, 120, 120), (220, 20, 60), (0, 128, 255), (255, 200, 0)])
crop_size = (128, 160)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=4))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(_delete_=True, **dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(_delete_=True, **dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

max_iters = 1000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
randomness = dict(seed=0)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
