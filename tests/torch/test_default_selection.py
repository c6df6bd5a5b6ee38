"""Default tensor selection on real architectures: every layer's matrix, never an embedding,
bias or norm, also through tied heads, wrappers, parametrizations and stacked experts."""

from __future__ import annotations

import pytest
from torch.nn.utils import parametrize
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
)

import lottery_ticket.torch as ltt
import torch
from lottery_ticket import LotteryTicketPruner
from torch import nn

LAYERS = 2


def per_layer(template: str, leaves: list[str]) -> list[str]:
    return [template.format(i=i, leaf=leaf) for i in range(LAYERS) for leaf in leaves]


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=LAYERS, n_embd=32, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def llama(tied: bool) -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=LAYERS,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


def bert_config() -> BertConfig:
    torch.manual_seed(0)
    return BertConfig(
        num_hidden_layers=LAYERS,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        vocab_size=64,
        max_position_embeddings=16,
    )


BERT_LAYERS = per_layer(
    "bert.encoder.layer.{i}.{leaf}.weight",
    ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
    + ["intermediate.dense", "output.dense"],
)


def test_gpt2_selects_every_conv1d_matrix_and_not_the_tied_embedding() -> None:
    model = gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    expected = per_layer("transformer.h.{i}.{leaf}.weight", ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"])
    assert ltt.prunable_names(model) == expected


def test_gpt2_ticket_prunes_the_transformer_and_leaves_embeddings_dense() -> None:
    model = gpt2()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ticket = LotteryTicketPruner(0.5, 1).find_ticket(model)
    assert list(ticket.masks) == ltt.prunable_names(model)
    assert ticket.total_parameters == sum(before[n].numel() for n in ticket.masks)
    assert ticket.remaining_parameters == ticket.total_parameters // 2
    for name, param in model.named_parameters():
        if name not in ticket.masks:
            assert torch.equal(param, before[name]), name  # wte, wpe, norms and biases untouched


@pytest.mark.parametrize("tied", [False, True])
def test_llama_selects_attention_and_mlp_and_the_untied_head(tied: bool) -> None:
    expected = per_layer(
        "model.layers.{i}.{leaf}.weight",
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
        + ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
    )
    assert ltt.prunable_names(llama(tied)) == expected + ([] if tied else ["lm_head.weight"])


def test_bert_classifier_selects_encoder_pooler_and_classifier() -> None:
    model = BertForSequenceClassification(bert_config())
    assert ltt.prunable_names(model) == [*BERT_LAYERS, "bert.pooler.dense.weight", "classifier.weight"]


def test_bert_masked_lm_leaves_out_the_decoder_tied_to_the_word_embeddings() -> None:
    model = BertForMaskedLM(bert_config())
    assert ltt.prunable_names(model) == [*BERT_LAYERS, "cls.predictions.transform.dense.weight"]


def test_stacked_experts_are_selected_and_the_router_is_not() -> None:
    torch.manual_seed(0)
    config = MixtralConfig(
        num_hidden_layers=1,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
        num_local_experts=4,
    )
    names = ltt.prunable_names(MixtralForCausalLM(config))
    assert [n for n in names if ".mlp." in n] == [
        "model.layers.0.mlp.experts.gate_up_proj",
        "model.layers.0.mlp.experts.down_proj",
    ]


def test_multihead_attention_projections_are_selected() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32)
    assert ltt.prunable_names(layer) == [
        "self_attn.in_proj_weight",
        "self_attn.out_proj.weight",
        "linear1.weight",
        "linear2.weight",
    ]
    split = nn.MultiheadAttention(16, 2, kdim=8, vdim=8)
    assert ltt.prunable_names(split) == ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]


class Head(nn.Module):
    def __init__(self, share: str) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 10, bias=False)
        if share == "parameter":
            self.dec.weight = self.emb.weight
        elif share == "storage":  # another Parameter object over the same memory
            self.dec.weight = nn.Parameter(self.emb.weight.data)


@pytest.mark.parametrize("share", ["parameter", "storage"])
def test_a_head_tied_to_an_embedding_is_never_selected(share: str) -> None:
    model = Head(share)
    assert ltt.prunable_names(model) == ["hidden.weight"]
    assert ltt.prunable_names(Head("none")) == ["hidden.weight", "dec.weight"]


class LoraLinear(nn.Module):
    """The shape of peft's LoRA wrapper: the wrapped layer as ``base_layer`` beside the factors."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, base.out_features, bias=False)})
        nn.init.zeros_(self.lora_B["default"].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B["default"](self.lora_A["default"](x))


def test_a_lora_wrapper_contributes_its_base_matrix_not_its_factors() -> None:
    model = nn.Sequential(LoraLinear(nn.Linear(8, 6)), nn.ReLU(), nn.Linear(6, 2))
    assert ltt.prunable_names(model) == ["0.base_layer.weight", "2.weight"]


class LowRank(nn.Module):
    """LoRA as a parametrization: ``weight = original + B @ A``."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(2, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, 2))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.B @ self.A


def test_a_parametrized_weight_selects_the_original_it_is_computed_from() -> None:
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 2))
    parametrize.register_parametrization(model[0], "weight", LowRank(6, 8))
    model[1] = nn.utils.parametrizations.weight_norm(model[1])
    # weight norm keeps a magnitude (original0, one per row) and a direction (original1, the matrix)
    assert ltt.prunable_names(model) == ["0.parametrizations.weight.original", "1.parametrizations.weight.original1"]
    ticket = LotteryTicketPruner(0.5, 1).find_ticket(model)
    assert ticket.remaining_parameters == (48 + 12) // 2


def test_integer_weights_are_left_out() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.int8), requires_grad=False)  # quantized codes
    assert ltt.prunable_names(model) == ["0.weight"]


def test_prunable_names_applies_include_and_exclude_and_changes_nothing() -> None:
    model = gpt2()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert ltt.prunable_names(model, exclude="*.attn.*") == per_layer(
        "transformer.h.{i}.mlp.{leaf}.weight", ["c_fc", "c_proj"]
    )
    assert ltt.prunable_names(model, include="*.wpe.weight") == ["transformer.wpe.weight"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_prunable_names_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got dict"):
        ltt.prunable_names({"w": torch.zeros(2)})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="include: expected a glob pattern"):
        ltt.prunable_names(nn.Linear(2, 2), include=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="include/exclude: no parameters selected"):
        ltt.prunable_names(nn.Sequential(nn.Embedding(3, 2), nn.LayerNorm(2)))
