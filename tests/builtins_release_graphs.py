"""Configs of flambe built-ins as each release wrote them, for tests/test_builtins_load_oracle.py.

Run under the oracle (`python builtins_release_graphs.py VERSION OUT`), it compiles each
graph with that release's flambe, runs `setup` where given, saves the object with flambe's
own `save` into `OUT/<graph>` and the outputs of its calls into `OUT/outputs.pt`.
`python builtins_release_graphs.py load DIR` rebuilds each `DIR/<graph>` with flambe's
`load` instead and writes `DIR/outputs.pt` (the outputs and the classes' modules).

>>> sorted(graphs("0.4.3")) == sorted(GRAPHS_0_4_3)
True
"""

from __future__ import annotations

import sys
from typing import Any

import torch

SENTENCES = ["The cat sat", "the dog ran far away", "a cat and a dog"]
IDS = torch.tensor([[4, 5, 6, 7], [3, 9, 0, 0], [8, 2, 5, 0]])
TARGET = torch.tensor([[5, 6, 7, 1], [9, 1, 0, 0], [2, 5, 1, 0]])

_FIELDS: dict[str, tuple[str, list[Any], list[Any]]] = {
    "text-field": (
        "!TextField {lower: true, eos_token: </s>, tokenizer: !CharTokenizer {}}",
        [SENTENCES],
        ["The cat and a bird", "dog"],
    ),
    "label-field": ("!LabelField {multilabel_sep: ','}", [["a", "b,a", "c"]], ["a,c", "b,c"]),
}

_COMMON: dict[str, tuple[str, list[Any], list[Any]]] = {
    **_FIELDS,
    "logistic-regression": ("!LogisticRegression {input_size: 3}", [], [torch.eye(3)]),
}

GRAPHS_0_4_3: dict[str, tuple[str, list[Any], list[Any]]] = {
    **_COMMON,
    "classifier": (
        """
!TextClassifier
embedder: !Embedder
  embedding: !Embeddings {num_embeddings: 12, embedding_dim: 4, padding_idx: 0}
  encoder: !PooledRNNEncoder {input_size: 4, hidden_size: 5, rnn_type: gru, pooling: last}
  pad_index: 0
output_layer: !SoftmaxLayer {input_size: 5, output_size: 3}
""",
        [],
        [IDS],
    ),
    "prototypical": (
        """
!PrototypicalTextClassifier
embedder: !Embedder
  embedding: !Embeddings {num_embeddings: 12, embedding_dim: 4}
  encoder: !PooledRNNEncoder {input_size: 4, hidden_size: 5, pooling: first}
  pad_index: 0
distance: cosine
""",
        [],
        [((IDS,), {"support": IDS, "support_label": torch.tensor([1, 0, 1])})],
    ),
}

_EMBEDDER = """
  embedding: !Embeddings {num_embeddings: 12, embedding_dim: 4, positional_encoding: true}
  encoder: !RNNEncoder {input_size: 4, hidden_size: 4, n_layers: 2}
"""

GRAPHS: dict[str, tuple[str, list[Any], list[Any]]] = {
    **_COMMON,
    "classifier": (
        f"""
!TextClassifier
embedder: !Embedder
{_EMBEDDER}
  pooling: !LastPooling {{}}
output_layer: !SoftmaxLayer {{input_size: 4, output_size: 3}}
dropout: 0.3
""",
        [],
        [IDS],
    ),
    "language-model": (
        f"""
!LanguageModel
embedder: !Embedder
{_EMBEDDER}
output_layer: !MLPEncoder {{input_size: 4, output_size: 12}}
""",
        [],
        [((IDS, TARGET), {})],
    ),
    # layers held in an nn.ModuleList of Components: 0.4.6-0.4.11 misfiled their keys
    "transformer-encoder": (
        "!TransformerEncoder {input_size: 4, d_model: 8, nhead: 2, num_layers: 2, "
        "dim_feedforward: 16}",
        [],
        [torch.arange(24.0).reshape(2, 3, 4) / 24],
    ),
    "image-classifier": (
        """
!ImageClassifier
encoder: !CNNEncoder {input_channels: 1, channels: [2, 3], conv_dim: 2, kernel_size: 2}
output_layer: !MLPEncoder {input_size: 12, output_size: 2, n_layers: 2, hidden_size: 5}
""",
        [],
        [torch.arange(32.0).reshape(2, 1, 4, 4) / 32],
    ),
}


def graphs(version: str) -> dict[str, tuple[str, list[Any], list[Any]]]:
    """The graphs `version` can build."""
    return GRAPHS_0_4_3 if version == "0.4.3" else GRAPHS


def call(obj: Any, inputs: list[Any]) -> list[Any]:
    """The object's outputs: `process` for fields, eval-mode forward for modules."""
    if not isinstance(obj, torch.nn.Module):
        return [obj.process(example) for example in inputs]
    obj.eval()
    with torch.no_grad():
        return [
            obj(*data[0], **data[1]) if isinstance(data, tuple) else obj(data) for data in inputs
        ]


def _save_all(version: str, out: str) -> None:
    import flambe.compile.serialization as serialization

    serialization.setup_default_modules = lambda: None  # needs ray
    from flambe.compile import yaml

    outputs = {}
    for name, (config, setup, inputs) in graphs(version).items():
        torch.manual_seed(0)
        obj = yaml.load(config)()
        if setup:
            obj.setup(*setup)
        outputs[name] = call(obj, inputs)
        serialization.save(obj, f"{out}/{name}")
    torch.save(outputs, f"{out}/outputs.pt")


def _load_all(folder: str) -> None:
    import flambe.compile.serialization as serialization

    serialization.setup_default_modules = lambda: None  # needs ray
    results = {}
    for name, (_, _, inputs) in GRAPHS.items():
        obj = serialization.load(f"{folder}/{name}")
        results[name] = {"module": type(obj).__module__, "outputs": call(obj, inputs)}
    torch.save(results, f"{folder}/outputs.pt")


if __name__ == "__main__":
    if sys.argv[1] == "load":
        _load_all(sys.argv[2])
    else:
        _save_all(sys.argv[1], sys.argv[2])
