"""ONNX export (``torch.onnx.export``) and onnxruntime's int8 quantiser.

Why ONNX for serving: the exported graph runs in onnxruntime, a few tens of MB of C++ with no
Python model code, and onnxruntime fuses operations (attention, LayerNorm, GELU) that PyTorch's
eager mode runs one by one. We use the TorchScript-based exporter (``dynamo=False``): it needs no
extra package (the dynamo exporter needs ``onnxscript``) and handles both the teacher and the
BiLSTM. Inputs are ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence
axes); the output is ``logits``.

The exporter *traces*: it runs the model once and records what happened. Anything decided in
Python from the example's values (a shape, a length) could be frozen into the graph, so
:func:`export_onnx` checks the graph against PyTorch on a second, differently shaped batch.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ktlab.deploy.runtime import onnx_session  # noqa: F401  (torch-free; re-exported here)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("logits",)
OPSET = 17
#: Largest |ONNX - PyTorch| logit difference accepted by the export check (fp32 graphs).
PARITY_TOLERANCE = 1e-4


class LogitsOnly(nn.Module):
    """``(input_ids, attention_mask) -> logits``: the exported signature, whatever the model
    returns (a tensor for the students, an HF output object for the teacher)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out if isinstance(out, torch.Tensor) else out.logits


class BiLSTMLastStates(nn.Module):
    """A :class:`~ktlab.nn.students.BiLSTMClassifier` with ``pooling="last"``, made exportable.

    The exporter turns ``pack_padded_sequence`` into the ONNX LSTM's ``sequence_lens``, so the
    per-step outputs are right, but it cannot export the final states ``h_n`` of a packed LSTM.
    They are in the outputs anyway: the forward direction's last state is its output at the
    last real token, the backward direction's is its output at position 0. Same logits, eval
    mode only (dropout is left out)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        lengths = attention_mask.sum(1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(m.embedding(input_ids), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        out, _ = m.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=input_ids.shape[1])
        h = m.lstm.hidden_size
        last = (lengths - 1)[:, None, None].expand(-1, 1, h)
        forward_state = out[:, :, :h].gather(1, last).squeeze(1)
        backward_state = out[:, 0, h:]
        return m.mlp(torch.cat([forward_state, backward_state], dim=-1))


def exportable(model: nn.Module) -> nn.Module:
    """``model`` wrapped in the exported signature (and rewritten where tracing needs it)."""
    from ktlab.nn.students import BiLSTMClassifier
    if isinstance(model, BiLSTMClassifier) and model.pooling == "last":
        return BiLSTMLastStates(model).eval()
    return LogitsOnly(model).eval()


def _padded_batch(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (in-vocabulary: 1..99) and a mask whose rows have different lengths, the
    first full: what :func:`ktlab.deploy.runtime.encode_texts` produces."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (rows, length), generator=g)
    mask = torch.ones((rows, length), dtype=torch.long)
    for i in range(1, rows):
        real = max(1, length - (i * length) // rows)
        mask[i, real:] = 0
        ids[i, real:] = 0
    return ids, mask


def export_onnx(model: nn.Module, path: str | Path, max_length: int = 64,
                opset: int = OPSET) -> Path:
    """Export ``model`` (eval mode) to ``path`` and check the graph against PyTorch.

    The example batch has rows of different lengths, so the traced graph sees padding (the
    BiLSTM's packing depends on it); the check uses another batch size and length, so a shape
    frozen into the graph fails here rather than in production."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = exportable(model.eval())
    example = _padded_batch(2, min(8, max_length), seed=0)
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")       # tracer warnings about Python control flow
        torch.onnx.export(wrapped, example, str(path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    _check_parity(wrapped, path, *_padded_batch(3, min(13, max_length), seed=1))
    return path


def _check_parity(wrapped: nn.Module, path: Path, ids: torch.Tensor, mask: torch.Tensor) -> None:
    with torch.no_grad():
        expected = wrapped(ids, mask).numpy()
    got = onnx_session(path, threads=1).run(
        None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    worst = float(np.abs(got - expected).max())
    if got.shape != expected.shape or worst > PARITY_TOLERANCE:
        raise RuntimeError(f"the ONNX graph in {path} disagrees with PyTorch (max |logit "
                           f"difference| {worst:.2e} on a padded batch); the model does something "
                           "the tracer cannot record - wrap it as BiLSTMLastStates does")


def quantize_onnx_int8(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime's dynamic quantisation: MatMul (and LSTM) weights to int8, activations
    quantised per batch at run time - the ONNX counterpart of ``quantize_dynamic``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    dst = Path(dst)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)      # its "consider pre-processing" advice is for CNNs
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst
