"""Cases shared by both sides of the built-ins differential test (tests/test_builtins_oracle.py).

A case describes an object by class paths relative to flambe's package (`nn.RNNEncoder`,
`field.TextField`, `torch.ReLU`), so the very same description builds flambe's class under
the oracle and ours (`flambe_compat.builtins.*`) here. Inputs are drawn from a generator
seeded per case, so both sides see identical tensors without passing them around. This
module imports neither flambe nor flambe_compat: `build(spec, root)` takes the package.

>>> [case["name"] for case in CASES["0.4.18"]][:2]
['embeddings', 'embeddings-sinusoidal']
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

SENTENCES = ["The cat sat", "the dog ran far away", "a cat and a dog", "The end"]


def _obj(path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"cls": path, "args": list(args), "kwargs": kwargs}


def _call(*args: Any, method: str = "__call__", **kwargs: Any) -> dict[str, Any]:
    return {"method": method, "args": list(args), "kwargs": kwargs}


def _randn(*shape: int) -> dict[str, Any]:
    return {"randn": list(shape)}


def _randint(high: int, *shape: int) -> dict[str, Any]:
    return {"randint": [high, *shape]}


def _tensor(values: Any, dtype: str = "long") -> dict[str, Any]:
    return {"tensor": values, "dtype": dtype}


# [B x S] token ids with padding (0) at the end of the shorter rows; one row is full
_IDS = _tensor([[4, 5, 6, 7], [3, 9, 0, 0], [8, 2, 5, 0]])
_MASK = _tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], "bool")
_MASK_FLOAT = _tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], "float")


def _embedder(encoder: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return _obj("nn.Embedder", embedding=_obj("nn.Embeddings", 12, 4), encoder=encoder, **kwargs)


def _case(name: str, spec: dict[str, Any], *calls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "build": spec, "calls": list(calls), **extra}


def _cases_0418() -> list[dict[str, Any]]:
    rnn = _obj("nn.RNNEncoder", input_size=4, hidden_size=5)
    gru = _obj(
        "nn.RNNEncoder", input_size=4, hidden_size=3, rnn_type="gru", n_layers=2, bidirectional=True
    )
    text_field = dict(lower=True, sos_token="<s>", eos_token="</s>")
    return [
        _case("embeddings", _obj("nn.Embeddings", 12, 4), _call(_IDS)),
        _case(
            "embeddings-sinusoidal",
            _obj(
                "nn.Embeddings",
                num_embeddings=12,
                embedding_dim=4,
                positional_encoding=True,
                positonal_max_length=10,
            ),
            _call(_IDS),
        ),
        _case(
            "embeddings-learned",
            _obj(
                "nn.Embeddings",
                num_embeddings=12,
                embedding_dim=6,
                positional_encoding=True,
                positional_learned=True,
                positonal_max_length=10,
            ),
            _call(_IDS),
        ),
        _case("rnn-lstm", rnn, _call(_randn(3, 4, 4), padding_mask=_MASK), _call(_randn(3, 4, 4))),
        _case("rnn-gru", gru, _call(_randn(3, 4, 4), padding_mask=_MASK)),
        *[
            _case(
                f"pooled-rnn-{pooling}",
                _obj("nn.PooledRNNEncoder", input_size=4, hidden_size=5, pooling=pooling),
                _call(_randn(3, 4, 4), padding_mask=_MASK),
            )
            for pooling in ("first", "last", "sum")
        ],
        _case("embedder-pooled", _embedder(rnn, pooling=_obj("nn.LastPooling")), _call(_IDS)),
        _case(
            "embedder-mask", _embedder(gru, return_mask=True, embedding_dropout=0.3), _call(_IDS)
        ),
        _case(
            "embedder-unpadded",
            _embedder(_obj("nn.MLPEncoder", 4, 2), padding_idx=None, pooling=_obj("nn.AvgPooling")),
            _call(_IDS),
        ),
        _case(
            "cnn-2d",
            _obj(
                "nn.CNNEncoder",
                input_channels=2,
                channels=[3, 2],
                kernel_size=[3, [2, 2]],
                pooling=_obj("torch.MaxPool2d", kernel_size=2),
                dropout=0.2,
            ),
            _call(_randn(2, 2, 10, 10)),
        ),
        _case(
            "cnn-1d",
            _obj(
                "nn.CNNEncoder",
                input_channels=1,
                channels=[2],
                conv_dim=1,
                padding=1,
                activation=_obj("torch.Tanh"),
            ),
            _call(_randn(2, 1, 7)),
        ),
        _case(
            "mlp",
            _obj(
                "nn.MLPEncoder",
                input_size=4,
                output_size=3,
                n_layers=3,
                hidden_size=6,
                dropout=0.1,
                hidden_activation=_obj("torch.Tanh"),
                output_activation=_obj("torch.Sigmoid"),
            ),
            _call(_randn(5, 4)),
        ),
        _case("softmax", _obj("nn.SoftmaxLayer", input_size=4, output_size=3), _call(_randn(5, 4))),
        _case(
            "softmax-no-log",
            _obj(
                "nn.SoftmaxLayer",
                input_size=4,
                output_size=3,
                take_log=False,
                mlp_layers=2,
                mlp_hidden_activation=_obj("torch.ReLU"),
            ),
            _call(_randn(5, 4)),
            _call(_randn(2, 5, 4)),
        ),
        # the k layers are unsaved (a plain list): equal only if both draw them alike
        _case(
            "mos",
            _obj("nn.MixtureOfSoftmax", input_size=4, output_size=3, k=2),
            _call(_randn(1, 3, 4)),
        ),
        *[
            _case(name, _obj(f"nn.{name}"), _call(_randn(3, 4, 5), _MASK), _call(_randn(3, 4, 5)))
            for name in ("FirstPooling", "LastPooling", "SumPooling", "AvgPooling")
        ],
        _case(
            "self-attentive-pooling",
            _obj(
                "nn.StructuredSelfAttentivePooling",
                input_size=5,
                attention_heads=2,
                attention_units=[6, 4],
            ),
            _call(_randn(3, 4, 5), _MASK),
        ),
        _case(
            "generalized-pooling",
            _obj("nn.GeneralizedPooling", input_size=5, attention_units=[6]),
            _call(_randn(3, 4, 5), _MASK),
        ),
        *[
            _case(name, _obj(f"nn.distance.{name}"), _call(_randn(4, 3), _randn(2, 3)))
            for name in ("EuclideanDistance", "CosineDistance", "HyperbolicDistance")
        ],
        *[
            _case(name, _obj(f"nn.distance.{name}"), _call(_randn(4, 3)))
            for name in ("EuclideanMean", "CosineMean", "HyperbolicMean")
        ],
        _case(
            "transformer-encoder",
            _obj(
                "nn.TransformerEncoder",
                input_size=4,
                d_model=8,
                nhead=2,
                num_layers=2,
                dim_feedforward=16,
            ),
            _call(_randn(3, 4, 4), padding_mask=_MASK),
            _call(_randn(3, 4, 4)),
        ),
        _case(
            "transformer-decoder",
            _obj(
                "nn.TransformerDecoder",
                input_size=8,
                d_model=8,
                nhead=2,
                num_layers=2,
                dim_feedforward=16,
            ),
            _call(_randn(3, 4, 8), _randn(5, 3, 8), padding_mask=_MASK),
        ),
        # flambe's Transformer.forward cannot run (unset d_model): names and shapes only
        _case(
            "transformer",
            _obj(
                "nn.Transformer",
                input_size=4,
                d_model=8,
                nhead=2,
                num_encoder_layers=2,
                dim_feedforward=3,
            ),
        ),
        _case(
            "text-classifier",
            _obj(
                "nlp.classification.TextClassifier",
                embedder=_embedder(rnn, pooling=_obj("nn.AvgPooling")),
                output_layer=_obj("nn.SoftmaxLayer", 5, 3),
                dropout=0.2,
            ),
            _call(_IDS),
            _call(_IDS, _tensor([0, 2, 1])),
        ),
        _case(
            "language-model-tied",
            _obj(
                "nlp.language_modeling.LanguageModel",
                embedder=_embedder(_obj("nn.RNNEncoder", input_size=4, hidden_size=4)),
                output_layer=_obj("torch.Linear", 4, 12),
                tie_weights=True,
                tie_weight_attr="embedding.token_embedding",
            ),
            _call(_IDS),
            _call(_IDS, _tensor([[5, 6, 7, 1], [9, 1, 0, 0], [2, 5, 1, 0]])),
        ),
        *[
            _case(
                f"prototypical-{distance}",
                _obj(
                    "nlp.fewshot.PrototypicalTextClassifier",
                    embedder=_embedder(rnn, pooling=_obj("nn.LastPooling")),
                    distance=distance,
                ),
                _call(_IDS, support=_IDS, support_label=_tensor([1, 0, 1])),
                _call(_IDS, _tensor([0, 1, 1]), prototypes=_randn(2, 5)),
            )
            for distance in ("euclidean", "cosine", "hyperbolic")
        ],
        _case(
            "image-classifier",
            _obj(
                "vision.classification.ImageClassifier",
                encoder=_obj("nn.CNNEncoder", input_channels=1, channels=[2]),
                output_layer=_obj("nn.MLPEncoder", 2 * 3 * 3, 4),
            ),
            _call(_randn(2, 1, 5, 5)),
        ),
        _case(
            "text-field",
            _obj("field.TextField", max_seq_len=5, truncate_end=True, **text_field),
            _call("The cat and a bird", method="process"),
            _call(["the dog", "far away"], method="process"),
            _call({"a": "The end", "b": "cat"}, method="process"),
            setup=[SENTENCES, [["nested", ("tuple", "items")]]],
        ),
        _case(
            "text-field-vocabulary",
            _obj(
                "field.TextField",
                vocabulary=["<pad>", "<unk>", "cat", "dog"],
                additional_special_tokens=["<m>"],
                tokenizer=_obj("tokenizer.CharTokenizer"),
            ),
            _call("cat dog", method="process"),
            setup=[["mat"]],
        ),
        _case(
            "lm-field",
            _obj("nlp.language_modeling.LMField", eos_token="</s>"),
            _call("the cat sat", method="process"),
            setup=[SENTENCES],
        ),
        _case(
            "label-field",
            _obj("field.LabelField", multilabel_sep=","),
            _call("b", method="process"),
            _call("a,c", method="process"),
            setup=[["a", "b,a", "c"]],
        ),
        _case(
            "label-field-one-hot",
            _obj("field.LabelField", one_hot=True, labels=["neg", "pos", "mid"]),
            _call("pos", method="process"),
            setup=[["pos", "neg", "pos"]],
        ),
        _case(
            "bow-field",
            _obj(
                "field.BoWField",
                tokenizer=_obj("tokenizer.WordTokenizer"),
                lower=True,
                min_freq=2,
                normalize=True,
                scale_factor=3.0,
            ),
            _call("the cat the dog never seen", method="process"),
            setup=[SENTENCES],
        ),
        _case("word-tokenizer", _obj("tokenizer.WordTokenizer"), _call(" a  b\tc ")),
        _case("char-tokenizer", _obj("tokenizer.CharTokenizer"), _call("ab c")),
        _case(
            "label-tokenizer",
            _obj("tokenizer.LabelTokenizer", multilabel_sep="|"),
            _call("x|y"),
            _call("x"),
        ),
    ]


def _cases_043() -> list[dict[str, Any]]:
    """0.4.3 wrote other names: Embeddings was an nn.Embedding (`weight`), `pad_index`, `mask`."""
    embeddings = _obj("nn.Embeddings", num_embeddings=12, embedding_dim=4, padding_idx=0)
    rnn = _obj("nn.RNNEncoder", input_size=4, hidden_size=5)
    embedder = _obj("nn.Embedder", embedding=embeddings, encoder=rnn, pad_index=0)
    pooled = _obj("nn.PooledRNNEncoder", input_size=4, hidden_size=5, pooling="last")
    return [
        _case("embeddings-weight", embeddings, _call(_IDS), same_keys=False),
        _case("rnn-mask", rnn, _call(_randn(3, 4, 4), mask=_MASK_FLOAT)),
        _case("pooled-rnn-mask", pooled, _call(_randn(3, 4, 4), mask=_MASK_FLOAT)),
        _case("embedder-pad-index", embedder, _call(_IDS), same_keys=False),
        _case(
            "text-classifier",
            _obj(
                "nlp.classification.TextClassifier",
                embedder=_obj("nn.Embedder", embedding=embeddings, encoder=pooled, pad_index=0),
                output_layer=_obj("nn.SoftmaxLayer", 5, 3),
            ),
            _call(_IDS),
            same_keys=False,
        ),
        _case(
            "language-model",
            _obj(
                "nlp.language_modeling.LanguageModel",
                embedder=embedder,
                output_layer=_obj("torch.Linear", 5, 12),
            ),
            _call(_IDS),
            same_keys=False,
        ),
        _case(
            "text-field",
            _obj("field.TextField", lower=True, eos_token="</s>"),
            _call("The cat and a bird", method="process"),
            setup=[SENTENCES],
        ),
    ]


CASES: dict[str, list[dict[str, Any]]] = {"0.4.18": _cases_0418(), "0.4.3": _cases_043()}


def materialize(value: Any, generator: torch.Generator) -> Any:
    """Turn input specs into tensors (drawn from `generator`), recursively."""
    if isinstance(value, dict) and "randn" in value:
        return torch.randn(*value["randn"], generator=generator)
    if isinstance(value, dict) and "randint" in value:
        high, *shape = value["randint"]
        return torch.randint(high, tuple(shape), generator=generator)
    if isinstance(value, dict) and "tensor" in value:
        return torch.tensor(value["tensor"], dtype=getattr(torch, value["dtype"]))
    return value


def build(spec: Any, root: str) -> Any:
    """Build the object `spec` describes from the package `root` (flambe or ours)."""
    if isinstance(spec, list):
        return [build(item, root) for item in spec]
    if not (isinstance(spec, dict) and "cls" in spec):
        return spec
    module_path, name = spec["cls"].rsplit(".", 1)
    if module_path == "torch":
        cls = getattr(torch.nn, name)
    else:
        cls = getattr(importlib.import_module(f"{root}.{module_path}"), name)
    args = [build(arg, root) for arg in spec.get("args", [])]
    kwargs = {key: build(value, root) for key, value in spec["kwargs"].items()}
    return cls(*args, **kwargs)


def run_case(case: dict[str, Any], root: str, before_calls: Any = None) -> tuple[Any, list[Any]]:
    """Build (seeded), set up, let `before_calls(obj)` act (e.g. load a state), then call.

    Returns the object and the outputs of its calls.
    """
    torch.manual_seed(0)
    obj = build(case["build"], root)
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    if "setup" in case:
        obj.setup(*case["setup"])
    if before_calls is not None:
        before_calls(obj)
    generator = torch.Generator().manual_seed(1234)
    outputs = []
    with torch.no_grad():
        for call in case["calls"]:
            args = [materialize(arg, generator) for arg in call["args"]]
            kwargs = {key: materialize(value, generator) for key, value in call["kwargs"].items()}
            method = obj if call["method"] == "__call__" else getattr(obj, call["method"])
            outputs.append(method(*args, **kwargs))
    return obj, outputs


def _flambe_side(version: str, out: str) -> None:
    """Under the oracle: run `version`'s cases with flambe's classes; save states and outputs."""
    import flambe.compile.serialization as serialization

    serialization.setup_default_modules = lambda: None  # needs ray
    results: dict[str, Any] = {}
    for case in CASES[version]:
        try:
            obj, outputs = run_case(case, "flambe")
            results[case["name"]] = {"state": dict(obj.get_state()), "outputs": outputs}
        except Exception as error:  # reported per case by the test
            results[case["name"]] = {"error": f"{type(error).__name__}: {error}"}
    torch.save(results, out)


if __name__ == "__main__":
    import sys

    _flambe_side(sys.argv[1], sys.argv[2])
