# Table 2, row 6 (conv_v1, conv, dwconv (row 5 for 300 epochs)), 300 epochs: the paper reports 76.33 % top-1.
_base_ = './classifier_adamw-300e_in1k.py'
model = dict(backbone=dict(arch='table2-row6'))
