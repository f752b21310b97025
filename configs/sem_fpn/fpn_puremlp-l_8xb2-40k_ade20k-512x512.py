_base_ = './fpn_adamw_8xb2-40k_ade20k-512x512.py'
# Pure-MLP has no published ImageNet weights: train them (an mmpretrain ImageClassifier with
# backbone=dict(type='PureMLP', arch='l', out_indices=-1) and head=dict(type='MLPClsHead')) and
# put the file here, or set init_cfg=None to train the detector from scratch.
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='PureMLP', arch='l',
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/puremlp_l_imagenet.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
