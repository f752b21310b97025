_base_ = './fpn_adamw_8xb2-40k_ade20k-512x512.py'
# mmseg's ResNetV1c Semantic FPN (nothing frozen), depth set here: mmseg 1.2.2's own
# fpn_r101 config assigns `model` twice and silently builds a ResNet-50.
model = dict(
    pretrained='open-mmlab://resnet18_v1c',
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512]))
