# Table 2, row 4 (conv_v1, patch_merging, dwconv), 100 epochs: the paper reports 73.84 % top-1.
_base_ = './classifier_adamw-100e_in1k.py'
model = dict(backbone=dict(arch='table2-row4'))
