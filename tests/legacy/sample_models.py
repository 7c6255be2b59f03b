# Copied unchanged from ../shared/flambe-oracle/sample_models.py (the fixtures/flambe-corpus graphs),
# imported by the tests through flambe_compat.shim as legacy user code.
"""Small flambe object graphs for the sample corpus in ../flambe-corpus."""
import torch
from flambe.compile import Component


class Counter(Component):
    def __init__(self, start=0, label='count'):
        self.count = start
        self.label = label
        self.register_attrs('count', 'label')


class MLP(Component, torch.nn.Module):
    def __init__(self, sizes=(4, 8, 2), name='mlp'):
        super().__init__()
        self.name = name
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*layers)
        self.register_attrs('name')


class Wrapper(Component):
    def __init__(self, model, counter, note=''):
        self.model = model
        self.counter = counter
        self.note = note


class Stack(Component, torch.nn.Module):
    _flambe_version = '2.0.1'

    def __init__(self, inner, width=3):
        super().__init__()
        self.inner = inner
        self.proj = torch.nn.Linear(width, width, bias=False)
        self.steps = [1, 2, 3]
        self.register_attrs('steps')


STASH_GRAPH = 'wrapper'
ABSPATH_GRAPH = 'counter'

CONFIGS = {
    'counter': """
!sample_models.Counter
start: 5
label: steps
""",
    'mlp': """
!sample_models.MLP
sizes: [4, 8, 2]
name: small
""",
    'wrapper': """
!sample_models.Wrapper
model: !sample_models.Stack
  inner: !sample_models.MLP
    sizes: [3, 3]
  width: 3
counter: !sample_models.Counter
  start: 1
note: hello
""",
}
