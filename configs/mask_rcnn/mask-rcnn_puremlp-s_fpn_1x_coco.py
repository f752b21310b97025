_base_ = './mask-rcnn_adamw_1x_coco.py'
# Pure-MLP has no published ImageNet weights: train them (an mmpretrain ImageClassifier with
# backbone=dict(type='PureMLP', arch='s', out_indices=-1) and head=dict(type='MLPClsHead')) and
# put the file here, or set init_cfg=None to train the detector from scratch.
model = dict(
    backbone=dict(_delete_=True, type='PureMLP', arch='s',
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/puremlp_s_imagenet.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
