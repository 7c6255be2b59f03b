"""User classes written for flambe 0.4.x, imported unchanged by real flambe and, through
flambe_compat.shim, by flambe_compat (the object and interop tests)."""
import torch
from flambe.compile import Component, registrable_factory


class Scaler(Component, torch.nn.Module):
    _flambe_version = '1.2.3'

    def __init__(self, size=3, factor=2.0):
        super().__init__()
        self.linear = torch.nn.Linear(size, size)
        self.factor = factor
        self.register_attrs('factor')

    def forward(self, x):
        return self.linear(x) * self.factor

    @registrable_factory
    @classmethod
    def square(cls, size=3):
        return cls(size=size, factor=float(size))


class Head(Component, torch.nn.Module):
    def __init__(self, body, activation, out=2):
        super().__init__()
        self.body = body
        self.activation = activation
        self.out = torch.nn.Linear(body.linear.out_features, out)

    def forward(self, x):
        return self.out(self.activation(self.body(x)))


class Notes(Component):
    def __init__(self, text=''):
        self.text = text
        self.seen = []

    def _state(self, state_dict, prefix, local_metadata):
        state_dict[prefix + 'seen'] = list(self.seen)
        return state_dict

    def _load_state(self, state_dict, prefix, local_metadata, strict, missing_keys,
                    unexpected_keys, error_msgs):
        self.seen = list(state_dict[prefix + 'seen'])


class Pipeline(Component):
    def __init__(self, head, notes, width):
        self.head = head
        self.notes = notes
        self.width = width

    def forward(self, x):
        return self.head(x[..., :self.width])


PIPELINE = """
!legacy_models.Pipeline
head: !legacy_models.Head
  body: !legacy_models.Scaler.square
    size: 3
  activation: !torch.Tanh {}
  out: 2
notes: !legacy_models.Notes
  text: hi
width: !@ head[body].linear.in_features
"""


def train(pipeline):
    """Change every piece of state away from its initial value."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in pipeline.head.parameters():
            parameter.add_(torch.randn_like(parameter))
    pipeline.head.body.factor = 0.5
    pipeline.notes.seen = ['a', 'b']
    return pipeline


def example_input():
    return torch.arange(8.0).reshape(2, 4) / 10
