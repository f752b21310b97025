"""A two-parameter mmengine model and dataset for tests that run a real Runner."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='loss'):
        out = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            return dict(loss=(out.squeeze(-1) - torch.stack(labels)).square().mean())
        return [dict(pred=o, label=l) for o, l in zip(out, labels)]


class ToyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=('zero', 'one'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.tensor(float(i % 2)))
