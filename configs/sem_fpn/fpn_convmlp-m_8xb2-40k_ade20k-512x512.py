_base_ = './fpn_adamw_8xb2-40k_ade20k-512x512.py'
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='ConvMLP', arch='m',
                  init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_m_imagenet.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
