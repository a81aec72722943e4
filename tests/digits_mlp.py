"""The small fixed model the attack tests share: an MLP trained for a second on the digits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def trained_digits_mlp():
    """(model in eval mode, test images, test labels): 15 epochs of Adam from seed 0."""
    from odex.data.digits import digits

    torch.manual_seed(0)
    data = digits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        for idx in torch.randperm(len(data.train)).split(128):
            loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data.test.x, data.test.y


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def digits_mlp_and_correct():
    """(model, test images, labels, the clean-correct images, their labels)."""
    model, x, y = trained_digits_mlp()
    ok = predict(model, x) == y
    return model, x, y, x[ok], y[ok]
