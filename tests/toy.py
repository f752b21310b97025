"""A two-parameter mmengine model and dataset for tests that run a real Runner, and other shared test helpers."""
import itertools

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
        return [dict(pred=o, label=y) for o, y in zip(out, labels)]


class ToyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=('zero', 'one'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.tensor(float(i % 2)))


def randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and norm affines (in place), so that folding them is tested."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith('running_mean') or (name.endswith('bias') and tensor.dim() == 1):
                tensor.normal_(0, 0.1)
            elif name.endswith('weight') and tensor.dim() == 1:
                tensor.normal_(1, 0.1)
    return model


_runs = itertools.count()


def experiment_name() -> str:
    """A Runner ``experiment_name`` no other runner of this process has: mmengine keys its logger,
    message hub and visualizer instances by that name (by default the second the runner was
    built), so two runners built in the same second write into the first one's work dir."""
    return f'toy-{next(_runs)}'
