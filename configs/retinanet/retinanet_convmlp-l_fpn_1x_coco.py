_base_ = './retinanet_adamw_1x_coco.py'
model = dict(
    backbone=dict(_delete_=True, type='ConvMLP', arch='l',
                  init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_l_imagenet.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
