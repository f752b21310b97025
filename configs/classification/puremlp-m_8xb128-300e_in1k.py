# Pure-MLP-M ImageNet pretraining: what the Pure-MLP detection and segmentation configs start
# from (their init_cfg reads this run's last checkpoint, work_dirs/puremlp-m_8xb128-300e_in1k/epoch_310.pth).
_base_ = './classifier_adamw-300e_in1k.py'
model = dict(backbone=dict(type='PureMLP', arch='m'), head=dict(in_channels=512))
