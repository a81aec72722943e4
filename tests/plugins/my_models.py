"""A model of the user's own, outside odex: model/mlp_node.yaml beside this file names it
(`model=mlp_node` with this folder on hydra.searchpath). Its `schema` states its keys and its
traits: BatchNorm in training mode inside the vector field, which the validation stage holds
against the gradient method's declared `supports` (grad=gq and grad=checkpointed refuse it).

The input flattened, a linear encoder to `width` features, an ODE block dh/dt = f(h) with
f = tanh(BatchNorm(Linear(h))), a linear readout of h(t1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from odex import schema
from odex.ode.block import ODEBlock


@dataclass
class MLPNodeSchema(schema.ModelBase):
    width: schema.PosInt = 32
    traits: ClassVar = schema.ModelTraits(field_batchnorm=True)


class BatchNormField(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.Tanh())

    def forward(self, t, h):
        return self.net(h)


class MLPNode(nn.Module):
    schema = MLPNodeSchema

    def __init__(self, info, solver, grad="direct", *, width: int = 32):
        super().__init__()
        inputs = 1
        for n in info.shape:
            inputs *= n
        self.encoder = nn.Linear(inputs, width)
        self.ode = ODEBlock(BatchNormField(width), solver, grad)
        self.readout = nn.Linear(width, info.num_classes)

    def forward(self, x):
        return self.readout(self.ode(self.encoder(x.flatten(1))))
