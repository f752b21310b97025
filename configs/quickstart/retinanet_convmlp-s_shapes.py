# Quickstart: RetinaNet with ConvMLP-S, trained from scratch on the generated shapes dataset
# (data/shapes/coco, made by `python tools/make_shapes.py`) at 160x128 on the CPU.
# Data, image size, schedule, learning rate and the head's norm differ from the real config; for
# COCO use configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py.
_base_ = '../retinanet/retinanet_convmlp-s_fpn_1x_coco.py'

data_root = 'data/shapes/coco/'
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'), palette=[(220, 20, 60), (0, 128, 255), (255, 200, 0)])
img_scale = (160, 128)

# From scratch, RetinaNet's head needs a norm. mmdet's head (four 3x3 convs per branch, no norm,
# weights of std 0.01): the last conv of its tower gives features of RMS 8e-5 at first, against the
# FPN's 1.5; AdamW moves each weight by about lr per step whatever its gradient, so at lr 1e-3 the
# tower's weights changed by up to 2 % a step and the loss blew up when the warm-up reached it
# (FPN output RMS 59, tower gradient norm 184; held-out bbox mAP 0.002 after 12 epochs). At lr 2e-4
# without the norm the loss rose again after 75 iterations. With GroupNorm after each conv the
# tower's features have RMS 0.7 from the start (docs/comparison.md).
model = dict(
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# held-out bbox mAP with the GroupNorm head (ConvMLP-S, these 12 epochs): lr 1e-4 0.336, 2e-4 0.413,
# 1e-3 0.142 (at 1e-3 the loss stalls until the first step of the schedule)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
randomness = dict(seed=0)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
