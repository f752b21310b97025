# The Semantic FPN quickstart with mmseg's ResNetV1c-18 in place of ConvMLP-S: from scratch like
# ours, nothing frozen; data, schedule and recipe are the ConvMLP-S quickstart's
# (`make compare` puts the three backbones side by side).
_base_ = './fpn_convmlp-s_shapes.py'
model = dict(
    backbone=dict(_delete_=True, type='ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                  dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2), norm_cfg=dict(type='SyncBN', requires_grad=True),
                  norm_eval=False, style='pytorch', contract_dilation=True, init_cfg=None))
