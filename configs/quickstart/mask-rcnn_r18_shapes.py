# The Mask R-CNN quickstart with mmdet's ResNet-18 in place of ConvMLP-S: from scratch like ours,
# nothing frozen and BN trained; data, schedule and recipe are the ConvMLP-S quickstart's
# (`make compare` puts the three backbones side by side).
_base_ = './mask-rcnn_convmlp-s_shapes.py'
model = dict(
    backbone=dict(_delete_=True, type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None))
