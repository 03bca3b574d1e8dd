"""Shared plumbing: sentences -> padded id tensors, a model's logits, eval mode.

Every explainer tokenises exactly as :mod:`ktlab.experiments.classify` does
(:func:`ktlab.data.collate.encode_sentences`: ``[CLS] ... [SEP]``, long sentences cut to
``max_length`` with the final ``[SEP]`` kept), so the model sees the same inputs it is evaluated
on. Teacher and BiLSTM students read the *same* WordPiece ids, so their explanations line up
token by token.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[list[int]]:
    """Unpadded token ids per sentence, as the training and evaluation code encodes them."""
    from ktlab.data.collate import encode_sentences
    return [item["input_ids"] for item in encode_sentences(tokenizer, sentences, max_length)]


def pad(id_lists: Sequence[Sequence[int]], pad_id: int,
        device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, right-padded to the longest sentence."""
    length = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), length), dtype=torch.long)
    for i, row in enumerate(id_lists):
        ids[i, :len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id or 0


def special_ids(tokenizer: Any) -> set[int]:
    """[CLS] and [SEP] (or <s>/</s>): structure, not words, so they are never attributed
    (the baseline keeps them) and never deleted. [UNK] stays a word."""
    names = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
    return {i for i in (getattr(tokenizer, n, None) for n in names) if i is not None}


def logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           **kwargs: Any) -> torch.Tensor:
    """``(batch, classes)`` logits of a teacher (HF output) or a student (a tensor)."""
    from ktlab.train import logits_of
    return logits_of(model(input_ids=input_ids, attention_mask=attention_mask, **kwargs))


@torch.no_grad()
def probabilities(model: nn.Module, id_lists: Sequence[Sequence[int]], pad_token_id: int,
                  batch_size: int = 64) -> torch.Tensor:
    """Softmax probabilities ``(n, classes)`` for token-id lists, in their order (CPU)."""
    out = []
    with eval_mode(model):
        for start in range(0, len(id_lists), batch_size):
            ids, mask = pad(id_lists[start:start + batch_size], pad_token_id, device_of(model))
            out.append(torch.softmax(logits(model, ids, mask).float(), dim=-1).cpu())
    return torch.cat(out)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Dropout off while explaining (an explanation must not be random), then the model's own
    mode back: explaining a model in the middle of training does not switch training off."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
