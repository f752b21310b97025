_base_ = './mask-rcnn_adamw_1x_coco.py'
model = dict(
    backbone=dict(_delete_=True, type='ConvMLP', arch='s',
                  init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_s_imagenet.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
