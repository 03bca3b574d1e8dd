"""A deployable folder: everything a server needs to turn text into a label, and nothing else.

::

    my-model/
      model.onnx        the network (fp32, or int8 with ``int8=True``)
      tokenizer.json    the WordPiece tokenizer (the ``tokenizers`` library reads it alone)
      labels.json       label names, in logit order
      manifest.json     format, ktlab version, max length, inputs/outputs, sha256 of each file

:class:`ktlab.deploy.runtime.Predictor` reads it back with numpy, onnxruntime and tokenizers
only. The manifest's sha256 lets the runtime refuse a folder whose files were changed or
mixed up (a model of one run with the tokenizer of another gives confident nonsense).

This module imports no torch at import time (the runtime imports :class:`BundleError` from it).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

BUNDLE_FORMAT = "ktlab.bundle/1"
MODEL_FILE, TOKENIZER_FILE, LABELS_FILE, MANIFEST_FILE = (
    "model.onnx", "tokenizer.json", "labels.json", "manifest.json")


class BundleError(ValueError):
    """A bundle folder that cannot be written or served as it is; the message says what to do."""


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (a teacher's model.onnx is ~90 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_bundle(folder: str | Path) -> bool:
    """Whether ``folder`` holds a manifest written by :func:`export_bundle` (any version)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict)
            and str(manifest.get("format", "")).startswith("ktlab.bundle/"))


def _check_target(out: Path) -> None:
    """Refuse to replace anything but nothing, an empty folder or an earlier bundle: we never
    delete what we did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleError(f"{out} is a file, not a folder; choose a new folder for --out")
    if any(out.iterdir()) and not is_bundle(out):
        raise BundleError(f"{out} exists and is not a ktlab bundle, so it is not overwritten; "
                          "choose an empty or new folder for --out")


def export_bundle(model: Any, tokenizer: Any, label_names: Sequence[str], out_dir: str | Path,
                  *, max_length: int = 64, int8: bool = False,
                  source: Optional[dict] = None) -> Path:
    """Write ``model`` (a torch module: ``(input_ids, attention_mask) -> logits``) as a bundle.

    ``tokenizer`` is a fast Hugging Face tokenizer; ``source`` (any JSON) records where the model
    came from. Written into a temporary sibling folder and swapped in at the end, so an
    interrupted export never leaves a half bundle. An existing bundle at ``out_dir`` is
    replaced; any other non-empty folder is refused."""
    import ktlab
    from ktlab.deploy.onnx_export import (INPUT_NAMES, OPSET, OUTPUT_NAMES, export_onnx,
                                          quantize_onnx_int8)
    from ktlab.deploy.runtime import Predictor
    out = Path(out_dir)
    _check_target(out)
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise BundleError("the tokenizer must be a fast (Rust) tokenizer with a tokenizer.json; "
                          "load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if int8:
            fp32 = export_onnx(model, tmp / "model-fp32.onnx", max_length=max_length)
            quantize_onnx_int8(fp32, tmp / MODEL_FILE)
            fp32.unlink()
        else:
            export_onnx(model, tmp / MODEL_FILE, max_length=max_length)
        tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
        (tmp / LABELS_FILE).write_text(json.dumps(list(label_names)))
        files = {name: {"sha256": sha256_of(tmp / name), "bytes": (tmp / name).stat().st_size}
                 for name in (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE)}
        manifest = {
            "format": BUNDLE_FORMAT, "ktlab_version": ktlab.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": {"file": MODEL_FILE, "int8": bool(int8), "opset": OPSET,
                      "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES)},
            "max_length": int(max_length), "labels": list(label_names),
            "pad_token_id": int(tokenizer.pad_token_id or 0),
            "files": files, "source": source or {}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        Predictor.load(tmp, threads=1)   # the runtime's own checks, before anything is replaced
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old ``out`` is moved aside first and deleted last."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
