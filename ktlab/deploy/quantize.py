"""Dynamic int8 quantisation: weights stored as int8, activations quantised on the fly.

``quantize_dynamic`` replaces every ``nn.Linear`` and ``nn.LSTM`` by a version that keeps each
weight matrix as int8 plus one *scale* and *zero point* per tensor (``w ≈ scale · (q - zero)``,
``q`` in [-128, 127]) and quantises each input batch as it arrives. Embeddings, LayerNorm and
biases stay fp32, so a model whose parameters are mostly embeddings (a BiLSTM student with a
30k-word table, or MiniLM) shrinks far less than 4×: :func:`int8_size_estimate` does that
arithmetic, :func:`state_bytes` measures what is really written to disk.
"""
from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

#: The module types ``quantize_dynamic`` converts (matched by exact type, as it does).
QUANTISED_TYPES = (nn.Linear, nn.LSTM)
#: Bytes of one quantised tensor's scale (a float64) and zero point (an int64).
QPARAM_BYTES = 16


def quantize_int8(model: nn.Module) -> nn.Module:
    """A dynamically quantised deep copy of ``model`` in eval mode (the original is untouched,
    so fp32 and int8 can be compared side by side)."""
    with warnings.catch_warnings():   # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), set(QUANTISED_TYPES), dtype=torch.qint8)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the serialised state dict: what the weights take on disk (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def int8_size_estimate(model: nn.Module) -> dict:
    """Weight bytes before and after dynamic int8 quantisation, by arithmetic (nothing is
    quantised, so it works on a ``meta``-device model too).

    Each weight matrix of an ``nn.Linear`` / ``nn.LSTM`` costs 1 byte per value plus
    :data:`QPARAM_BYTES` for its scale and zero point; every other parameter (biases,
    embeddings, norms) keeps its size (4 bytes per value in fp32). The rule of exercise
    ``08.int8_size``."""
    fp32_bytes = int8_bytes = quantised = kept = 0
    for module in model.modules():
        converted = type(module) in QUANTISED_TYPES
        for name, p in module.named_parameters(recurse=False):
            fp32_bytes += p.numel() * p.element_size()
            if converted and name.startswith("weight"):
                quantised += p.numel()
                int8_bytes += p.numel() + QPARAM_BYTES
            else:
                kept += p.numel()
                int8_bytes += p.numel() * p.element_size()
    return {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes,
            "ratio": fp32_bytes / max(int8_bytes, 1),
            "quantised_params": quantised, "kept_fp32_params": kept}
