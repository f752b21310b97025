# Table 2, row 3 (conv_v1, conv, no dwconv), 100 epochs: the paper reports 69.56 % top-1.
_base_ = './classifier_adamw-100e_in1k.py'
model = dict(backbone=dict(arch='table2-row3'))
