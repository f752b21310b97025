# Table 2, row 1 (mlp, patch_merging, no dwconv: Pure-MLP-S), 100 epochs: the paper reports 63.29 % top-1.
_base_ = './classifier_adamw-100e_in1k.py'
model = dict(backbone=dict(arch='table2-row1'))
