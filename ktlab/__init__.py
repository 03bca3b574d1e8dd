"""ktlab: transferring knowledge from BERT into other neural networks.

Start with ``cfg = ktlab.config.load()``; every module is a room for one concept:
``ktlab.data``, ``ktlab.models``, ``ktlab.nn``, ``ktlab.pretraining``, ``ktlab.transfer``,
``ktlab.train``, ``ktlab.metrics``, ``ktlab.viz``, ``ktlab.experiments``, ``ktlab.grading``.
"""
from ktlab import config

__version__ = "0.1.0"
__all__ = ["config", "__version__"]
