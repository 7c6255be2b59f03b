"""Object graphs for the oracle differential (tests/test_oracle_objects.py).

Written for flambe, as a flambe user would have written it: the generator imports this
module under each real flambe release (top-level name `graph_models`, so the user tags
read `!graph_models.Class`), and our tests import it unchanged through
`flambe_compat.shim.install()`.

`CONFIGS` maps a graph name to its YAML config (for the importing release: the built-in
classes changed between releases); `PREPARE` holds what runs on a built object before
its state is saved (a field's vocabulary); `PROBES` the method calls whose results are
recorded, on fixed inputs.
"""

import re

import flambe
import torch
from flambe.compile import Component

RELEASE = tuple(int(part) for part in re.findall(r"\d+", flambe.__version__)[:3])


class GraphTally(Component):
    """A Component that is not a Module: its state is its registered attributes."""

    def __init__(self, start=0, label="count"):
        self.count = start
        self.label = label
        self.register_attrs("count", "label")

    def total(self, x):
        return self.count + x


class GraphBrick(Component, torch.nn.Module):
    """A Component Module, meant to sit in a container of another Component."""

    def __init__(self, width=4):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(torch.tanh(self.linear(x)))


class GraphTower(Component, torch.nn.Module):
    """Components in a ModuleList: the layout flambe 0.4.5 - 0.4.11 saved under wrong keys."""

    def __init__(self, blocks, width=4):
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)
        self.out = torch.nn.Linear(width, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class GraphNest(Component, torch.nn.Module):
    """GraphTowers in a ModuleList: Components in containers two levels deep."""

    def __init__(self, towers):
        super().__init__()
        self.towers = torch.nn.ModuleList(towers)

    def forward(self, x):
        return torch.stack([tower(x) for tower in self.towers])


class GraphHolder(Component):
    """A Component that is not a Module holding a plain Module and a Component Module.

    flambe saved the plain Module's parameters from 0.4.12 on.
    """

    def __init__(self, block, width=4, scale=1.0):
        self.block = block
        self.head = torch.nn.Linear(width, 3)
        self.scale = scale
        self.register_attrs("scale")

    def apply(self, x):
        return self.head(self.block(x)) * self.scale


def _tensor(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


X4 = _tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 1.0]])
TOKENS = _tensor([[2, 3, 4, 0], [5, 2, 0, 0]], torch.int64)
SEQ = torch.linspace(-1.0, 1.0, 2 * 3 * 8).reshape(2, 3, 8)
TGT = torch.linspace(1.0, -1.0, 2 * 3 * 8).reshape(2, 3, 8)

CONFIGS = {
    "counter": """
!graph_models.GraphTally
start: 5
label: steps
""",
    "tower": """
!graph_models.GraphTower
blocks:
  - !graph_models.GraphBrick
    width: 4
  - !graph_models.GraphBrick
    width: 4
width: 4
""",
    "nest": """
!graph_models.GraphNest
towers:
  - !graph_models.GraphTower
    blocks:
      - !graph_models.GraphBrick
        width: 4
  - !graph_models.GraphTower
    blocks:
      - !graph_models.GraphBrick
        width: 4
      - !graph_models.GraphBrick
        width: 4
""",
    "holder": """
!graph_models.GraphHolder
block: !graph_models.GraphBrick
  width: 4
width: 4
scale: 0.5
""",
}

PREPARE = {}

PROBES = {
    "counter": [("total", (3,))],
    "tower": [("forward", (X4,))],
    "nest": [("forward", (X4,))],
    "holder": [("apply", (X4,))],
}

if RELEASE < (0, 4, 6):
    # flambe.nn.Embedder took an nn.Embedding and `pad_index`
    _EMBEDDER = """
embedder: !Embedder
  embedding: !torch.Embedding
    num_embeddings: 8
    embedding_dim: 4
    padding_idx: 0
  encoder: !PooledRNNEncoder
    input_size: 4
    hidden_size: 5
    rnn_type: gru
  pad_index: 0
"""
else:
    _EMBEDDER = """
embedder: !Embedder
  embedding: !Embeddings
    num_embeddings: 8
    embedding_dim: 4
  encoder: !PooledRNNEncoder
    input_size: 4
    hidden_size: 5
    rnn_type: gru
"""

CONFIGS["textclf"] = (
    "!TextClassifier"
    + _EMBEDDER
    + """output_layer: !SoftmaxLayer
  input_size: 5
  output_size: 3
"""
)
PROBES["textclf"] = [("forward", (TOKENS,))]

# 0.4.6's WordTokenizer is nltk's word_tokenize (nltk is not in the oracle)
CONFIGS["textfield"] = f"""
!TextField
tokenizer: {"!CharTokenizer" if RELEASE == (0, 4, 6) else "!WordTokenizer"} {{}}
lower: true
"""
PREPARE["textfield"] = lambda field: field.setup(["The cat sat", "the dog ran far"])
PROBES["textfield"] = [("process", ("the cat ran away",)), ("process", ("Dog sat",))]

CONFIGS["labelfield"] = """
!LabelField {}
"""
PREPARE["labelfield"] = lambda field: field.setup(["pos", "neg", "neutral", "pos"])
PROBES["labelfield"] = [("process", ("neg",)), ("process", ("pos",))]

CONFIGS["chartok"] = """
!CharTokenizer {}
"""
PROBES["chartok"] = [("tokenize", ("abc d",))]

if RELEASE < (0, 4, 6):
    _LM_EMBEDDING = """!torch.Embedding
    num_embeddings: 8
    embedding_dim: 5
    padding_idx: 0"""
    # 0.4.3's `tie_weights: true` fails (it reads a `self.embedding` it never set)
    _TIED = "tie_weights: false"
else:
    _LM_EMBEDDING = """!Embeddings
    num_embeddings: 8
    embedding_dim: 5"""
    _TIED = "tie_weights: true\ntie_weight_attr: embedding.token_embedding"
CONFIGS["lm"] = f"""
!LanguageModel
embedder: !Embedder
  embedding: {_LM_EMBEDDING}
  encoder: !RNNEncoder
    input_size: 5
    hidden_size: 5
    rnn_type: lstm
output_layer: !torch.Linear
  in_features: 5
  out_features: 8
{_TIED}
"""
PROBES["lm"] = [("forward", (TOKENS,))]

if RELEASE >= (0, 4, 6):
    # flambe's Transformer passed `dim_feedforward` as the number of layers (and the
    # reverse) to its encoder and decoder, and its own forward fails (no `d_model`):
    # two layers each, feed-forward width 3; probed through its encoder and decoder
    CONFIGS["transformer"] = """
!Transformer
input_size: 8
d_model: 8
nhead: 2
num_encoder_layers: 3
num_decoder_layers: 1
dim_feedforward: 2
dropout: 0.0
"""
    PROBES["transformer"] = [
        ("encoder.forward", (SEQ,)),
        ("decoder.forward", (TGT, SEQ.transpose(0, 1).contiguous())),
    ]

    CONFIGS["tencoder"] = """
!TransformerEncoder
input_size: 6
d_model: 8
nhead: 2
num_layers: 2
dim_feedforward: 6
dropout: 0.0
"""
    PROBES["tencoder"] = [("forward", (SEQ[:, :, :6],))]
