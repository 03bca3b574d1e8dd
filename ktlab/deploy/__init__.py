"""Deployment (notebook 08, ``ktlab export`` / ``ktlab predict``): serving a distilled model.

We distil a teacher into a small student so that it is cheap to *serve*; this package is the
serving side, one module per step:

* :mod:`~ktlab.deploy.quantize` - dynamic int8 quantisation (``torch.ao.quantization``) and the
  arithmetic of what it saves;
* :mod:`~ktlab.deploy.onnx_export` - ``torch.onnx.export`` (checked against PyTorch) and
  onnxruntime's int8 quantiser;
* :mod:`~ktlab.deploy.bundle` - a self-contained folder: model, tokenizer, labels, and a
  manifest with the sha256 of every file;
* :mod:`~ktlab.deploy.runtime` - :class:`~ktlab.deploy.runtime.Predictor`, which serves a
  bundle with numpy + onnxruntime + tokenizers only (no torch, no training code);
* :mod:`~ktlab.deploy.measure` - latency percentiles with warm-up excluded, with and without
  tokenisation, throughput and peak memory, each variant in its own process.

Only the torch-free parts are imported here, so ``import ktlab.deploy`` (and a server that only
predicts) never loads torch; import the torch modules by name::

    from ktlab.deploy import Predictor, export_bundle
    from ktlab.deploy.quantize import quantize_int8
"""
from ktlab.deploy.bundle import BUNDLE_FORMAT, BundleError, export_bundle
from ktlab.deploy.runtime import Predictor

__all__ = ["BUNDLE_FORMAT", "BundleError", "Predictor", "export_bundle"]
