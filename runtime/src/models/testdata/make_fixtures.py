"""Tiny random encoders with every head, and transformers' outputs on a fixed padded batch.

Covers the families without a conformance fixture (XLM-RoBERTa, ELECTRA, ALBERT, DeBERTa-v2). Run from
this directory with torch==2.6.0, transformers==4.51.3, safetensors (CPU, float32, eager):

    python make_fixtures.py

Writes <family>-<head>/{config.json,model.safetensors} and expected.json (the batch and, per
directory, the output of the head as a flat list with its shape).
"""
import json
import os

import torch
import transformers
from transformers import (
    AlbertConfig, DebertaV2Config, ElectraConfig, XLMRobertaConfig,
    AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification,
)

assert torch.__version__.startswith("2.6.0"), torch.__version__
assert transformers.__version__ == "4.51.3", transformers.__version__

HEADS = {
    "base": AutoModel,
    "seqcls": AutoModelForSequenceClassification,
    "tokcls": AutoModelForTokenClassification,
    "qa": AutoModelForQuestionAnswering,
    "mlm": AutoModelForMaskedLM,
}
COMMON = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=66, initializer_range=0.2,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

FAMILIES = {
    "xlm-roberta": lambda labels: XLMRobertaConfig(**COMMON, type_vocab_size=1, pad_token_id=1,
                                                  bos_token_id=0, eos_token_id=2, **labels),
    "electra": lambda labels: ElectraConfig(**COMMON, embedding_size=24, type_vocab_size=2,
                                            pad_token_id=0, **labels),
    # Four layers in two groups of two shared inner layers.
    "albert": lambda labels: AlbertConfig(**{**COMMON, "num_hidden_layers": 4}, embedding_size=24,
                                          num_hidden_groups=2, inner_group_num=2,
                                          hidden_act="gelu_new", type_vocab_size=2,
                                          pad_token_id=0, **labels),
    # DeBERTa-v3 style: relative attention with log buckets, no absolute positions.
    "deberta-v2": lambda labels: DebertaV2Config(
        **COMMON, type_vocab_size=0, pad_token_id=0, relative_attention=True,
        max_relative_positions=-1, position_buckets=16, pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
        layer_norm_eps=1e-7, pooler_hidden_size=32, pooler_hidden_act="gelu", **labels),
}

LABELS = dict(id2label={0: "A", 1: "B", 2: "C"}, label2id={"A": 0, "B": 1, "C": 2})

# Two rows, the second right-padded; ids avoid the special ids 0..4.
g = torch.Generator().manual_seed(7)
ids = torch.randint(5, 128, (2, 9), generator=g)
ids[:, 0] = 0  # <s> / [CLS]-like first token
lengths = [9, 6]


def batch_for(pad_id):
    input_ids = ids.clone()
    mask = torch.ones_like(input_ids)
    for row, n in enumerate(lengths):
        input_ids[row, n:] = pad_id
        mask[row, n:] = 0
    return input_ids, mask


expected = {"lengths": lengths, "models": {}}
for family, make in FAMILIES.items():
    for head, auto in HEADS.items():
        torch.manual_seed(1234)
        config = make(LABELS if head in ("seqcls", "tokcls") else {})
        model = auto.from_config(config, attn_implementation="eager").eval()
        name = f"{family}-{head}"
        os.makedirs(name, exist_ok=True)
        model.save_pretrained(name, safe_serialization=True)
        input_ids, mask = batch_for(config.pad_token_id)
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=mask)
        if head == "base":
            t = out.last_hidden_state
        elif head == "qa":
            t = torch.stack([out.start_logits, out.end_logits], dim=-1)
        else:
            t = out.logits
        expected["models"][name] = {
            "head": head,
            "input_ids": input_ids.tolist(),
            "attention_mask": mask.tolist(),
            "shape": list(t.shape),
            "output": [round(x, 7) for x in t.flatten().tolist()],
        }

with open("expected.json", "w") as f:
    json.dump(expected, f)
