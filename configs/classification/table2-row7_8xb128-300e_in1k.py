# Table 2, row 7 (conv, conv, dwconv: ConvMLP-S), 300 epochs: the paper reports 76.81 % top-1.
_base_ = './classifier_adamw-300e_in1k.py'
model = dict(backbone=dict(arch='table2-row7'))
