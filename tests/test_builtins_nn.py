"""Unit tests of flambe_compat.builtins.nn and the models (shapes, values, legacy names)."""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

from flambe_compat import LoadError
from flambe_compat.builtins import nlp
from flambe_compat.builtins.nlp.classification import TextClassifier
from flambe_compat.builtins.nlp.fewshot import PrototypicalTextClassifier
from flambe_compat.builtins.nlp.language_modeling import LanguageModel
from flambe_compat.builtins.nn import (
    AvgPooling,
    CNNEncoder,
    Embedder,
    Embeddings,
    FirstPooling,
    GeneralizedPooling,
    LastPooling,
    MixtureOfSoftmax,
    MLPEncoder,
    PooledRNNEncoder,
    RNNEncoder,
    Sequential,
    SoftmaxLayer,
    StructuredSelfAttentivePooling,
    SumPooling,
    Transformer,
    TransformerDecoder,
    TransformerEncoder,
    TransformerSRU,
    TransformerSRUEncoder,
)
from flambe_compat.builtins.nn.distance import (
    CosineDistance,
    CosineMean,
    EuclideanDistance,
    get_distance_module,
    get_mean_module,
)
from flambe_compat.builtins.nn.transformer import generate_square_subsequent_mask
from flambe_compat.builtins.vision.classification import ImageClassifier
from flambe_compat.registry import registry
from flambe_compat.state import State

IDS = torch.tensor([[4, 5, 6, 7], [3, 9, 0, 0]])
MASK = IDS != 0


class _Recorder(nn.Module):
    """An encoder that records the keyword arguments it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def forward(self, data: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.calls.append(kwargs)
        return data


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make optional packages unimportable."""

    def hide(*names: str) -> None:
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)

    return hide


def test_module_helpers() -> None:
    model = MLPEncoder(3, 2)
    model.seq[0].bias.requires_grad = False
    assert model.num_parameters() == 8
    assert model.num_parameters(trainable=True) == 6
    assert [name for name, _ in model.named_trainable_params] == ["seq.0.weight"]
    model.clip_params(0.01)
    assert model.seq[0].weight.abs().max().item() <= 0.01
    assert math.isclose(model.parameter_norm, model.seq[0].weight.norm().item(), rel_tol=1e-6)
    model(torch.ones(4, 3)).sum().backward()
    assert model.gradient_norm > 0
    model.clip_gradient_norm(1e-3)
    assert math.isclose(model.gradient_norm, 1e-3, rel_tol=1e-3)


def test_embeddings_shapes_and_positions() -> None:
    data = torch.tensor([[1, 2], [3, 0], [4, 4]])
    assert Embeddings(10, 4)(data).shape == (3, 2, 4)
    sinusoidal = Embeddings(10, 4, positional_encoding=True, positonal_max_length=6)
    assert sinusoidal.pos_embedding is not None
    table = sinusoidal.pos_embedding.weight
    assert table.shape == (6, 4) and not table.requires_grad
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert math.isclose(table[1, 0].item(), math.sin(1.0), rel_tol=1e-6)
    assert math.isclose(table[1, 3].item(), math.cos(1 / 100), rel_tol=1e-6)
    out = sinusoidal(data)
    expected = sinusoidal.token_embedding(data) + table[:3].unsqueeze(1)
    assert torch.allclose(out, expected)
    learned = Embeddings(10, 4, positional_encoding=True, positional_learned=True)
    assert learned.pos_embedding is not None and learned.pos_embedding.weight.requires_grad
    with pytest.raises(ValueError, match="positonal_learned"):
        Embeddings(10, 4, positional_learned=True)


def test_embeddings_from_pretrained() -> None:
    table = torch.randn(5, 4)
    frozen = Embeddings.from_pretrained(table)
    assert torch.equal(frozen.token_embedding.weight, table)
    assert not frozen.token_embedding.weight.requires_grad
    assert frozen.token_embedding.padding_idx == 0
    legacy = Embeddings.from_pretrained(table, freeze=False, paddinx_idx=None)
    assert legacy.token_embedding.padding_idx is None
    assert legacy.token_embedding.weight.requires_grad
    positions = torch.randn(5, 4)
    both = Embeddings.from_pretrained(table, positonal_embeddings=positions)
    assert both.pos_embedding is not None and torch.equal(both.pos_embedding.weight, positions)
    with pytest.raises(ValueError, match="same dimensions"):
        Embeddings.from_pretrained(table, positonal_embeddings=torch.randn(4, 4))
    with pytest.raises(ValueError, match="2-dimensional"):
        Embeddings.from_pretrained(torch.randn(5))


def test_embeddings_load_the_0_4_3_weight_name() -> None:
    weight = torch.randn(6, 3)
    for load in ("load_state", "load_state_dict"):
        embeddings = Embeddings(num_embeddings=6, embedding_dim=3, padding_idx=0)
        state = State({"weight": weight})
        getattr(embeddings, load)(state, strict=True)
        assert torch.equal(embeddings.token_embedding.weight, weight)
    nested = Embedder(Embeddings(6, 3), _Recorder(), padding_idx=None)
    nested.load_state(State({"embedding.weight": weight}), strict=True)
    assert torch.equal(nested.embedding.token_embedding.weight, weight)


def test_embedder_masks_and_pooling() -> None:
    encoder = _Recorder()
    embedder = Embedder(Embeddings(10, 4), encoder, return_mask=True)
    encoding, mask = embedder(IDS)
    assert encoding.shape == (2, 4, 4)
    assert torch.equal(mask, MASK)
    assert torch.equal(encoder.calls[-1]["padding_mask"], MASK)
    pooled = Embedder(Embeddings(10, 4), RNNEncoder(4, 3), pooling=LastPooling())
    assert pooled(IDS).shape == (2, 3)
    unmasked = _Recorder()
    Embedder(Embeddings(10, 4), unmasked, padding_idx=None)(IDS)
    assert unmasked.calls == [{}]


def test_embedder_written_by_0_4_3_passes_a_float_mask() -> None:
    encoder = _Recorder()
    embedder = Embedder(embedding=Embeddings(10, 4), encoder=encoder, pad_index=0)
    embedder(IDS)
    assert embedder.pad_index == embedder.padding_idx == 0
    assert torch.equal(encoder.calls[-1]["mask"], MASK.float())


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_rnn_encoder(rnn_type: str) -> None:
    encoder = RNNEncoder(4, 3, n_layers=2, rnn_type=rnn_type, bidirectional=True)
    assert encoder.output_size == 6
    data = torch.randn(2, 4, 4)
    output, _ = encoder(data)
    assert output.shape == (2, 4, 6)
    masked, _ = encoder(data, padding_mask=MASK)
    legacy, _ = encoder(data, mask=MASK.float())
    assert torch.equal(masked, legacy)
    # the short sequence ignores what follows its end
    alone, _ = encoder(data[1:, :2])
    assert torch.allclose(masked[1, :2], alone[0], atol=1e-6)
    assert torch.equal(masked[1, 2:], torch.zeros(2, 6))


def test_rnn_encoder_refuses_unknown_types(missing: Any) -> None:
    with pytest.raises(ValueError, match="Unkown rnn type"):
        RNNEncoder(4, 3, rnn_type="transformer")
    missing("sru")
    with pytest.raises(LoadError, match=r"'sru'.*pip install sru"):
        RNNEncoder(4, 3, rnn_type="sru")


def test_pooled_rnn_encoder() -> None:
    data = torch.randn(2, 4, 4)
    with pytest.warns(DeprecationWarning):
        pooled = {p: PooledRNNEncoder(4, 3, pooling=p) for p in ("first", "last", "sum", "average")}
    for pooling, encoder in pooled.items():
        output, _ = encoder.rnn(data, padding_mask=MASK)
        result = encoder(data, padding_mask=MASK)
        assert result.shape == (2, 3), pooling
        expected = {
            "first": output[:, 0],
            "last": torch.stack([output[0, 3], output[1, 1]]),
            "sum": torch.stack([output[0].sum(dim=0), output[1, :2].sum(dim=0)]),
            "average": torch.stack([output[0].mean(dim=0), output[1, :2].mean(dim=0)]),
        }[pooling]
        assert torch.allclose(result, expected, atol=1e-6), pooling
    assert torch.allclose(pooled["sum"](data), pooled["sum"].rnn(data)[0].sum(dim=1), atol=1e-6)
    pooled["first"].pooling = "max"
    with pytest.raises(ValueError, match="Invalid pooling"):
        pooled["first"](data)


def test_cnn_encoder_blocks_as_flambe_laid_them_out() -> None:
    encoder = CNNEncoder(2, [3, 4], pooling=nn.MaxPool2d(2), kernel_size=[3, [2, 2]])
    assert encoder(torch.randn(1, 2, 12, 12)).shape == (1, 4, 2, 2)
    block = encoder.cnn[0]
    assert [type(m).__name__ for m in block] == ["Conv2d", "MaxPool2d", "ReLU", "Dropout"]
    assert sorted(encoder.state_dict()) == [
        "cnn.0.0.bias",
        "cnn.0.0.weight",
        "cnn.1.0.bias",
        "cnn.1.0.weight",
    ]
    with pytest.raises(ValueError, match="conv_dim"):
        CNNEncoder(1, [2], conv_dim=4)
    with pytest.raises(ValueError, match="same length as channels"):
        CNNEncoder(1, [2, 3], kernel_size=[3])
    with pytest.raises(ValueError, match="same length as conv_dim"):
        CNNEncoder(1, [2], kernel_size=[[3, 3, 3]])


def test_mlp_layout() -> None:
    mlp = MLPEncoder(4, 2, n_layers=3, hidden_size=5, dropout=0.5, hidden_activation=nn.Tanh())
    names = [type(m).__name__ for m in mlp.seq]
    assert names == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert mlp.seq[3].in_features == 5
    assert [type(m).__name__ for m in MLPEncoder(4, 2, n_layers=1, hidden_size=9).seq] == ["Linear"]
    assert MLPEncoder(4, 2, hidden_size=9).seq[0].in_features == 4


def test_softmax_layers() -> None:
    data = torch.randn(3, 4)
    log_probs = SoftmaxLayer(4, 5)(data)
    assert torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(3))
    probs = SoftmaxLayer(4, 5, take_log=False)(data)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))
    # flambe's nn.Softmax() without dim normalises 3-d inputs over dimension 0
    cube = SoftmaxLayer(4, 5, take_log=False)(torch.randn(2, 3, 4))
    assert torch.allclose(cube.sum(dim=0), torch.ones(3, 5))


def test_mixture_of_softmax_keeps_its_layers_out_of_the_state() -> None:
    mos = MixtureOfSoftmax(4, 3, k=2)
    assert sorted(mos.state_dict()) == ["pi_w.seq.0.bias", "pi_w.seq.0.weight"]
    assert len(mos.layers) == 2
    out = mos(torch.randn(1, 3, 4))
    assert out.shape == (3, 3)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(3))


def test_sequential_runs_in_order_under_both_names() -> None:
    first, second = nn.Linear(2, 3), nn.Linear(3, 1)
    seq = Sequential(first=first, second=second)
    data = torch.randn(4, 2)
    assert torch.equal(seq(data), second(first(data)))
    assert sorted(seq.state_dict()) == sorted(
        f"{prefix}.{name}"
        for prefix in ("first", "second", "seq.0", "seq.1")
        for name in ("weight", "bias")
    )


def test_poolings() -> None:
    data = torch.arange(24.0).reshape(2, 4, 3)
    assert torch.equal(FirstPooling()(data, MASK), data[:, 0])
    assert torch.equal(LastPooling()(data, MASK), torch.stack([data[0, 3], data[1, 1]]))
    assert torch.equal(LastPooling()(data), data[:, 3])
    assert torch.equal(SumPooling()(data, MASK)[1], data[1, :2].sum(dim=0))
    assert torch.equal(AvgPooling()(data, MASK)[1], data[1, :2].mean(dim=0))
    assert torch.equal(AvgPooling()(data), data.mean(dim=1))
    attentive = StructuredSelfAttentivePooling(3, attention_heads=2, attention_units=[5])
    assert attentive(data, MASK).shape == (2, 3)
    # masked positions get no attention: changing them changes nothing
    changed = data.clone()
    changed[1, 2:] = 100.0
    assert torch.allclose(attentive(data, MASK), attentive(changed, MASK))
    generalized = GeneralizedPooling(3, attention_units=[4], input_dropout=0.1)
    assert generalized.eval()(data, MASK).shape == (2, 3)
    assert [type(m).__name__ for m in generalized.mlp] == ["Linear", "ReLU", "Linear"]


def test_distances_and_means() -> None:
    a, b = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert EuclideanDistance()(a, b).tolist() == [[1.0], [1.0]]
    cosine = CosineDistance()(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), b)
    assert torch.allclose(cosine, torch.tensor([[0.0], [1 - 1 / math.sqrt(2)]]))
    assert torch.allclose(
        CosineMean()(torch.tensor([[2.0, 0.0], [0.0, 3.0]])), torch.tensor([0.5, 0.5])
    )
    for metric in ("euclidean", "cosine", "hyperbolic"):
        distance, mean = get_distance_module(metric), get_mean_module(metric)
        points = torch.randn(4, 3)
        assert distance(points, points[:2]).shape == (4, 2)
        assert mean.eval()(points).shape == (3,)
    with pytest.raises(ValueError, match="Unknown distance alias"):
        get_distance_module("manhattan")
    with pytest.raises(ValueError, match="Unknown distance alias"):
        get_mean_module("manhattan")


def test_transformers() -> None:
    encoder = TransformerEncoder(4, d_model=8, nhead=2, num_layers=2, dim_feedforward=16).eval()
    source = torch.randn(3, 5, 4)
    assert encoder(source, padding_mask=torch.ones(3, 5, dtype=torch.bool)).shape == (3, 5, 8)
    assert hasattr(encoder, "proj") and len(encoder.layers) == 2
    decoder = TransformerDecoder(8, 8, 2, 1, dim_feedforward=16).eval()
    assert decoder(torch.randn(3, 2, 8), torch.randn(5, 3, 8)).shape == (3, 2, 8)
    assert not hasattr(decoder, "proj")
    # flambe's argument order: dim_feedforward became the layer count, and back
    model = Transformer(4, d_model=8, nhead=2, num_encoder_layers=5, dim_feedforward=2).eval()
    assert len(model.encoder.layers) == len(model.decoder.layers) == 2
    assert model.encoder.layers[0].linear1.out_features == 5
    assert model(source, torch.randn(3, 6, 4)).shape == (3, 6, 8)
    with pytest.raises(RuntimeError, match="batch number"):
        model(source, torch.randn(2, 6, 4))
    with pytest.raises(RuntimeError, match="feature number"):
        model(source, torch.randn(3, 6, 8))
    mask = generate_square_subsequent_mask(3)
    assert mask.tolist() == [[0.0, -math.inf, -math.inf], [0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]]


def test_transformer_sru_needs_sru(missing: Any) -> None:
    missing("sru")
    with pytest.raises(
        LoadError, match="TransformerSRUEncoderLayer needs the optional package 'sru'"
    ):
        TransformerSRUEncoder(4, 4, 2, 1, 8)


class _FakeSRUCell(nn.Module):
    """Stands in for sru.SRUCell: a projection, and the last position as the state."""

    def __init__(self, input_size: int, hidden_size: int, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(input_size, hidden_size))

    def forward(self, data: torch.Tensor, state: Any = None, mask_pad: Any = None) -> Any:
        out = data @ self.weight
        return out, out[-1]


def test_transformer_sru_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sru", types.SimpleNamespace(SRUCell=_FakeSRUCell))
    model = TransformerSRU(4, d_model=8, nhead=2, num_encoder_layers=3, dim_feedforward=2).eval()
    assert len(model.encoder.layers) == 2
    assert "encoder.layers.0.sru.weight" in model.state_dict()
    memory, states = model.encoder(torch.randn(3, 5, 4))
    assert memory.shape == (3, 5, 8) and states.shape == (2, 3, 3)
    assert model(torch.randn(3, 5, 4), torch.randn(3, 2, 4)).shape == (3, 2, 8)


def _embedder(**kwargs: Any) -> Embedder:
    return Embedder(Embeddings(12, 4), RNNEncoder(4, 4), **kwargs)


def test_text_classifier_and_image_classifier() -> None:
    classifier = TextClassifier(_embedder(pooling=AvgPooling()), SoftmaxLayer(4, 3)).eval()
    target = torch.tensor([1, 2])
    pred, same = classifier(IDS, target)
    assert pred.shape == (2, 3) and same is target
    assert torch.equal(classifier(IDS), pred)
    image = ImageClassifier(CNNEncoder(1, [2]), MLPEncoder(2 * 4 * 4, 3))
    assert image(torch.randn(2, 1, 6, 6)).shape == (2, 3)


def test_language_model_ties_and_flattens() -> None:
    embedder = _embedder()
    model = LanguageModel(
        embedder, nn.Linear(4, 12), tie_weights=True, tie_weight_attr="embedding.token_embedding"
    ).eval()
    assert model.output_layer.weight is embedder.embedding.token_embedding.weight
    assert model(IDS).shape == (2, 4, 12)
    target = torch.tensor([[5, 6, 7, 1], [9, 1, 0, 0]])
    flat_pred, flat_target = model(IDS, target)
    assert flat_pred.shape == (6, 12)
    assert flat_target.tolist() == [5, 6, 7, 1, 9, 1]
    with pytest.raises(AttributeError):
        LanguageModel(_embedder(), nn.Linear(4, 12), tie_weights=True)


def test_prototypical_classifier() -> None:
    model = PrototypicalTextClassifier(_embedder(pooling=LastPooling()), distance="cosine").eval()
    scores = model(IDS, support=IDS, support_label=torch.tensor([1, 0]))
    assert scores.shape == (2, 2)
    assert torch.allclose(scores.flip(1).diagonal(), torch.zeros(2), atol=1e-6)
    label = torch.tensor([0, 1])
    scores, same = model(IDS, label, prototypes=torch.randn(3, 4))
    assert scores.shape == (2, 3) and same is label
    with pytest.raises(ValueError, match="No prototypes"):
        model(IDS)


@pytest.mark.parametrize("name", sorted(nlp.transformers.__all__))
def test_transformer_classes_name_their_dependency(name: str) -> None:
    cls = getattr(nlp.transformers, name)
    dependency = "'transformers'" if name.startswith("Pretrained") else "'pytorch_transformers'"
    with pytest.raises(LoadError, match=f"{name} is not ported.*{dependency}"):
        cls("bert-base-uncased")
    if hasattr(cls, "from_alias"):
        with pytest.raises(LoadError, match=dependency):
            cls.from_alias("bert-base-uncased")


@pytest.mark.parametrize(
    "tag",
    [
        "!Embeddings",
        "!TextClassifier",
        "!TransformerSRU",
        "!BertEmbedder",
        "!Embeddings.from_pretrained",
    ],
)
def test_builtins_have_flambe_tags(tag: str) -> None:
    resolved = registry.resolve(tag)
    assert resolved.cls.__module__.startswith("flambe_compat.builtins.")
