"""Every way of moving BERT's knowledge into another network, as small readable functions.

* :mod:`ktlab.transfer.interpolate` - beta-interpolation W = beta*W_S + (1-beta)*W_T0, replace_weights
* :mod:`ktlab.transfer.layers` - teacher -> student layer maps, init a shallower student, projections
* :mod:`ktlab.transfer.freeze` - freezing, gradual unfreezing, layer-wise LR decay
* :mod:`ktlab.transfer.regularize` - L2-SP, Mixout, WiSE-FT
* :mod:`ktlab.transfer.distill` - KD losses, teacher caching, the Distiller
* :mod:`ktlab.transfer.peft` - LoRA, Houlsby adapters, BitFit
* :mod:`ktlab.transfer.forgetting` - linear CKA and weight distance to the source
* :mod:`ktlab.transfer.multitask` - shared encoder + heads, task samplers, loss weighting

Import the sub-modules directly (``from ktlab.transfer.distill import kd_loss``); this package
imports them lazily so that ``import ktlab.transfer`` stays cheap.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("interpolate", "layers", "freeze", "regularize", "distill", "peft", "forgetting",
               "multitask")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"ktlab.transfer.{name}")
    raise AttributeError(f"module 'ktlab.transfer' has no attribute {name!r}")


__all__ = list(_SUBMODULES)
