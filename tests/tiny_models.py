"""Tiny seeded BERTs and toy token data shared by the train/transfer tests (fast on 2 CPUs)."""
from __future__ import annotations

import torch
from transformers import (BertConfig, BertForSequenceClassification, BertForTokenClassification,
                          BertModel)

VOCAB = 100


def tiny_config(layers: int = 2, hidden: int = 32, heads: int = 2, num_labels: int = 2,
                **kwargs) -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=2 * hidden,
                      max_position_embeddings=64, num_labels=num_labels, **kwargs)


def tiny_bert(task: str = "sequence", seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cls = {"sequence": BertForSequenceClassification, "token": BertForTokenClassification,
           "base": BertModel}[task]
    return cls(tiny_config(**kwargs))


def toy_sequence_data(n: int, seed: int = 0, with_teacher: bool = False) -> list[dict]:
    """Label = parity of the first token: learnable, so 'loss falls' tests can fail."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 10, (1,), generator=g))
        ids = torch.randint(5, VOCAB, (length,), generator=g).tolist()
        item = {"input_ids": ids, "labels": int(ids[0] % 2)}
        if with_teacher:
            sign = 1.0 if item["labels"] else -1.0  # a confident, mostly right teacher
            item["teacher_logits"] = torch.tensor([-2.0 * sign, 2.0 * sign]) + \
                0.5 * torch.randn(2, generator=g)
        out.append(item)
    return out


def toy_token_data(n: int, seed: int = 0, num_labels: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 10, (1,), generator=g))
        ids = torch.randint(5, VOCAB, (length,), generator=g).tolist()
        labels = [i % num_labels for i in ids]
        labels[0] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def batch_of(items: list[dict]) -> dict:
    from ktlab.data.collate import PadCollator
    return PadCollator()(items)
