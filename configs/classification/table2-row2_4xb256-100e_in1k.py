# Table 2, row 2 (conv_v1, patch_merging, no dwconv), 100 epochs: the paper reports 66.69 % top-1.
_base_ = './classifier_adamw-100e_in1k.py'
model = dict(backbone=dict(arch='table2-row2'))
