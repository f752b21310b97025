# Table 2, row 5 (conv_v1, conv, dwconv), 100 epochs: the paper reports 74.04 % top-1.
_base_ = './classifier_adamw-100e_in1k.py'
model = dict(backbone=dict(arch='table2-row5'))
