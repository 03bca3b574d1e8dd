"""Serve a bundle: text in, label out, with numpy + onnxruntime + tokenizers only.

This module deliberately imports no torch, no transformers and no ktlab training code (a test
checks it): what a server needs is the exported graph, the tokenizer and the label names.
Texts longer than the model's ``max_length`` sub-tokens are cut the way training cut them
(``[CLS]`` + the first ``max_length - 2`` pieces + ``[SEP]``) and flagged ``"truncated": true``;
``on_overlength="error"`` refuses them instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ktlab.deploy.bundle import (BUNDLE_FORMAT, LABELS_FILE, MANIFEST_FILE, TOKENIZER_FILE,
                                 BundleError, sha256_of)

OVERLENGTH = ("truncate", "error")
_EXPORT_HINT = "re-export it with `ktlab export RUN_DIR --format onnx --out DIR`"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def read_manifest(folder: str | Path) -> dict:
    """The bundle's manifest, checked for format and ktlab version."""
    import ktlab
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"no bundle folder at {folder}; {_EXPORT_HINT}")
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}, so it is not a ktlab bundle; "
                          f"{_EXPORT_HINT}")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{file} is not valid JSON ({err}); {_EXPORT_HINT}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{folder} is a {manifest.get('format')!r} folder, this runtime reads "
                          f"{BUNDLE_FORMAT!r}; {_EXPORT_HINT}")
    made_by = str(manifest.get("ktlab_version", "?"))
    if _major_minor(made_by) != _major_minor(ktlab.__version__):
        raise BundleError(f"{folder} was exported by ktlab {made_by}, this is ktlab "
                          f"{ktlab.__version__} (bundles are read by the same major.minor "
                          f"version); install ktlab=={made_by} to serve it, or {_EXPORT_HINT}")
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists is there, with its recorded sha256."""
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder} is missing {name}; copy the whole folder, or "
                              f"{_EXPORT_HINT}")
        if sha256_of(path) != meta["sha256"]:
            raise BundleError(f"{path} does not match the sha256 in {MANIFEST_FILE} (changed or "
                              f"copied from another bundle); {_EXPORT_HINT}")


def load_tokenizer(file: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from its tokenizer.json, without its own truncation/padding
    (:func:`encode_texts` cuts and pads exactly as training did)."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int, pad_id: int = 0,
                 on_overlength: str = "truncate") -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Ids and mask (int64, padded to the longest text) and which texts were cut.

    The cut keeps ``[CLS]``, the first ``max_length - 2`` pieces and the final ``[SEP]``, as
    :func:`ktlab.data.collate.encode_sentences` did for training."""
    rows, truncated = [], []
    for i, enc in enumerate(tokenizer.encode_batch(list(texts)) if texts else []):
        ids = enc.ids
        cut = len(ids) > max_length
        if cut and on_overlength == "error":
            shown = texts[i] if len(texts[i]) <= 60 else texts[i][:57] + "..."
            raise BundleError(f"text {i} ({shown!r}) has {len(ids)} sub-tokens, over the "
                              f"model's max_length of {max_length}; shorten it, or let it be "
                              "truncated (drop --strict / use on_overlength='truncate')")
        rows.append(ids[: max_length - 1] + ids[-1:] if cut else ids)
        truncated.append(cut)
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask, truncated


def onnx_session(path: str | Path, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (``None``: onnxruntime's
    default, all cores). One inter-op thread: these graphs have no parallel branches."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:   # onnxruntime raises its own exception types
        raise BundleError(f"onnxruntime cannot load {path} ({type(err).__name__}: "
                          f"{str(err)[:200]}); {_EXPORT_HINT}") from None


class Predictor:
    """A loaded bundle. ``Predictor.load(folder).predict(["a fine film"])``."""

    def __init__(self, folder: Path, manifest: dict, session: Any, tokenizer: Any,
                 labels: list[str], on_overlength: str = "truncate"):
        self.folder, self.manifest, self.session = folder, manifest, session
        self.tokenizer, self.labels, self.on_overlength = tokenizer, labels, on_overlength
        self.max_length = int(manifest["max_length"])
        self.pad_id = int(manifest.get("pad_token_id", 0))

    @classmethod
    def load(cls, folder: str | Path, threads: Optional[int] = None, verify: bool = True,
             on_overlength: str = "truncate") -> "Predictor":
        """Read and check a bundle (format, version, files, sha256, label count).

        ``threads``: onnxruntime intra-op threads (``None``: all cores); ``verify=False`` skips
        the sha256 of every file (seconds for a teacher); ``on_overlength``: "truncate" (flag
        the cut texts) or "error" (refuse them)."""
        if on_overlength not in OVERLENGTH:
            raise ValueError(f"on_overlength must be one of {OVERLENGTH}, got {on_overlength!r}")
        folder = Path(folder)
        manifest = read_manifest(folder)
        if verify:
            verify_files(folder, manifest)
        model_file = folder / manifest["model"]["file"]
        for path in (model_file, folder / TOKENIZER_FILE, folder / LABELS_FILE):
            if not path.is_file():
                raise BundleError(f"{folder} is missing {path.name}; {_EXPORT_HINT}")
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        labels = json.loads((folder / LABELS_FILE).read_text())
        predictor = cls(folder, manifest, onnx_session(model_file, threads), tokenizer, labels,
                        on_overlength)
        width = predictor.logits(*predictor.encode(["a"])[:2]).shape[-1]
        if width != len(labels):
            raise BundleError(f"{folder}: the model gives {width} logits but {LABELS_FILE} names "
                              f"{len(labels)} labels; {_EXPORT_HINT}")
        return predictor

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Token ids and attention mask (int64, padded to the longest text) and, per text,
        whether it was cut to ``max_length``."""
        return encode_texts(self.tokenizer, self._check(texts), self.max_length, self.pad_id,
                            self.on_overlength)

    def logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The network alone: (batch, labels) logits."""
        names = self.manifest["model"].get("inputs", ["input_ids", "attention_mask"])
        return self.session.run(None, dict(zip(names, (ids, mask))))[0]

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """Per text: the label, its id, every label's probability, the tokens the model saw."""
        texts = self._check(texts)
        if not texts:
            return []
        ids, mask, truncated = self.encode(texts)
        logits = self.logits(ids, mask).astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out = []
        for i, text in enumerate(texts):
            k = int(probs[i].argmax())
            tokens = [self.tokenizer.id_to_token(int(t)) for t in ids[i, :int(mask[i].sum())]]
            out.append({"text": text, "label": self.labels[k], "label_id": k,
                        "probs": {name: round(float(p), 6)
                                  for name, p in zip(self.labels, probs[i])},
                        "tokens": tokens, "truncated": truncated[i]})
        return out

    @staticmethod
    def _check(texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, e.g. predict(['a fine film']), not one string")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is "
                            f"{type(texts[bad[0]]).__name__}")
        return texts
