_base_ = './retinanet_adamw_1x_coco.py'
# mmdet's ResNet-101 (frozen_stages=1, norm_eval=True), trained with the same recipe.
model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
