"""Parameter-efficient transfer and forgetting, measured side by side (notebook 07).

Every method fine-tunes the same pretrained classifier (MiniLM + a mean-pooling head; a hub BERT
with its [CLS] head in the full profile) on the same SST-2 sentences, for the same number of
steps, with the same seed, batch, maximum length and warm-up schedule. Only what is trained, and
its learning rate, differs (:data:`METHODS`). The code behind ``ktlab run peft``; the notebook
calls the same stages one cell each:

==================================  ======================================================
stage                               function
==================================  ======================================================
1. data: SST-2, CoNLL POS, CKA set  :func:`load_data`
2. the untouched reference model    :func:`pretrained_model`
3. a POS probe on its features      :func:`train_probe` (trained once, reused for every method)
4. one method                       :func:`build_model` -> :func:`train_method` ->
                                    :func:`measure_method` -> :func:`merged` ->
                                    :func:`measure_forgetting` (or :func:`run_method`: all)
5. WiSE-FT between full and source  :func:`wise_ft_frontier`
6. ktlab's LoRA against ``peft``'s   :func:`time_lora_vs_peft` + :func:`compare_with_peft`
7. report                           :func:`assemble_results`, :func:`goals`,
                                    :func:`markdown_table`, :func:`write_results`
==================================  ======================================================

:func:`run` is only their composition plus caching: each finished method record is written
atomically to ``<out>/cache/<method>.json`` (keyed on the sizes, seed, teacher and method, so a
changed configuration is never reused), and training checkpoints every ``save_every`` steps under
``<out>/cache/train/``: an interrupted run continues where it stopped.

Forgetting is measured three ways: linear CKA per layer against the pretrained encoder, the
accuracy drop of a POS probe trained once on the pretrained encoder's features and then read off
each method's features with the same weights, and the WiSE-FT frontier (full fine-tuning's
encoder blended back toward the pretrained one) on which the PEFT methods are single points.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ktlab.experiments import classify, common
from ktlab.experiments.common import caps_record, describe_machine
from ktlab.transfer.freeze import TASK_HEAD, is_head

SCHEMA = "ktlab.peft/1"
StageCallback = Callable[[str, int], None]  #: ``cb(method, step)`` after every optimiser step

LORA_TARGETS = ("query", "value")  #: Hu et al. 2021 adapt W_q and W_v
ADAPTER_BOTTLENECK = 64            #: Houlsby et al. 2019
MIXOUT_P = 0.1                     #: Lee et al. 2020
L2SP_ALPHA, L2SP_BETA = 0.01, 0.01  #: pull to the source weights / to 0 for the new head
#: The new head learns at this rate in *every* method: all start from the same (seeded) head
#: and steer it alike, so differences come from what each method changes in the encoder. A
#: linear probe's rate: at 1e-3 the head barely moves in quick's 60 steps (head-only 63.7% on
#: 300 dev sentences, 78.3% at 1e-2; full fine-tuning 77.3% -> 78.7%).
HEAD_LR = 1e-2
WEIGHT_DECAY = 0.01
SPEED_BATCH = 32                   #: inference throughput is measured at this batch size


class ConfigError(ValueError):
    """A bad argument for the PEFT experiment (an unknown method name, ...)."""


# ----------------------------------------------------------------------------- methods

@dataclasses.dataclass(frozen=True)
class Method:
    """One way of fine-tuning: what :func:`build_model` changes and how fast it learns."""

    name: str
    family: str  #: full | head | freeze | bitfit | lora | adapters | l2sp | mixout | peft-lora
    lr: float          #: peak rate of the method's own parameters (the head: :data:`HEAD_LR`)
    rank: int = 0      #: LoRA rank r (alpha = 2 r, so the sweep changes capacity, not step size)
    saves: str = "trainable"  #: what a deployment stores: "trainable" tensors or "all" weights


# Learning rates. Full fine-tuning moves every pretrained weight, so it takes the small BERT rate
# (Devlin et al. 2019: 2e-5..5e-5; the top of the range, our runs are a few hundred steps).
# freeze-bottom-k, L2-SP and Mixout are full fine-tuning of (part of) the same weights: 5e-5 too.
# PEFT methods train few parameters that start at (LoRA's B, the adapters' up-projection: 0) or
# near (biases) a function-preserving value; they need ~20x larger steps to get as far in the
# same number of steps (Hu et al. 2021 used 4e-4..5e-4 over 30-80 epochs; Houlsby et al. 2019
# and Ben Zaken et al. 2022 searched up to 1e-3): 1e-3 for our short budgets (one seed at quick
# sizes, 300 dev sentences, +-2.3 points: LoRA 79.3% at 1e-3 vs 78.3% at 2e-3, BitFit 81.0% vs
# 78.7%, adapters 81.0%). peft's LoRA must share ktlab LoRA's rate, or the library comparison
# would compare learning rates.
METHODS = {m.name: m for m in (
    Method("full", "full", 5e-5, saves="all"),
    Method("head", "head", HEAD_LR),
    Method("freeze-bottom-k", "freeze", 5e-5),   # embeddings + the bottom half of the layers
    Method("bitfit", "bitfit", 1e-3),
    Method("lora", "lora", 1e-3, rank=8),
    Method("lora-r1", "lora", 1e-3, rank=1),
    Method("lora-r4", "lora", 1e-3, rank=4),
    Method("lora-r16", "lora", 1e-3, rank=16),
    Method("adapters", "adapters", 1e-3),
    Method("l2sp", "l2sp", 5e-5, saves="all"),
    Method("mixout", "mixout", 5e-5, saves="all"),
    Method("peft-lora", "peft-lora", 1e-3, rank=8),
)}
LORA_FAMILIES = ("lora", "peft-lora")

PROFILE_METHODS = {
    "quick": ("full", "head", "bitfit", "lora", "adapters", "peft-lora"),
    "notebook": ("full", "head", "bitfit", "lora", "adapters", "peft-lora"),  # notebook 07
    "bench": tuple(METHODS),
    "full": tuple(METHODS),
}


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """``"full,lora"`` -> ``["full", "lora"]``, rejecting unknown names with the valid ones."""
    return common.parse_names(spec, tuple(METHODS), "method", "--methods", "full,lora,peft-lora",
                              ConfigError)


def settings() -> dict:
    """The constants every method shares (part of each cache key and of ``results.json``)."""
    return {"head_lr": HEAD_LR, "weight_decay": WEIGHT_DECAY, "lora_targets": list(LORA_TARGETS),
            "lora_alpha": "2 * rank", "lora_dropout": 0.0,
            "adapter_bottleneck": ADAPTER_BOTTLENECK, "mixout_p": MIXOUT_P,
            "l2sp_alpha": L2SP_ALPHA, "l2sp_beta": L2SP_BETA, "speed_batch": SPEED_BATCH,
            "methods": {name: dataclasses.asdict(m) for name, m in METHODS.items()}}


# ----------------------------------------------------------------------------- sizes

@dataclasses.dataclass(frozen=True)
class PeftSizes:
    """How big one run is (``None`` = the whole split). ``steps`` is the one budget knob."""

    train_pool: Optional[int]   #: seeded, label-stratified SST-2 training subset batches come from
    dev: Optional[int]          #: SST-2 dev sentences (None = all 872)
    steps: int                  #: optimiser steps per method
    batch_size: int
    max_length: int
    probe_train: Optional[int]  #: CoNLL-2003 train sentences the POS probe is fitted on
    probe_eval: Optional[int]   #: CoNLL-2003 valid sentences it is scored on
    wise_ft_step: float         #: spacing of the WiSE-FT beta grid
    cka_sentences: int          #: SST-2 dev sentences whose token states CKA compares
    speed_sentences: int        #: dev sentences timed for inference throughput
    latency_sentences: int = 16
    warmup_ratio: float = 0.1
    probe_steps: int = 100      #: L-BFGS iterations of the probe
    save_every: int = 50        #: optimiser steps between resumable checkpoints
    timing_rounds: int = 2      #: interleaved rounds of the ktlab-vs-peft LoRA timing
    timing_steps: int = 5       #: training steps per model per round


PROFILE_SIZES = {
    # <= 5 min on 2 idle CPU cores: 6 methods x 60 steps x 16 sentences (~2 min of training),
    # ~7 s of measuring per method, a 5-point WiSE-FT sweep, a 500/300-sentence probe
    "quick": PeftSizes(train_pool=2000, dev=None, steps=60, batch_size=16, max_length=64,
                       probe_train=500, probe_eval=300, wise_ft_step=0.25, cka_sentences=128,
                       speed_sentences=256, save_every=30),
    # <= 100 min on 2 idle CPU cores: all 12 methods x 500 steps x 32 sentences (16,000 of a
    # fixed 20,000-sentence subset, under one epoch). Measured in the quick run (2 threads,
    # batch 16): full 0.30 s/step, BitFit 0.08, LoRA 0.12, adapters 0.12, head 0.06; at batch 32
    # one step of all 12 methods is ~4.3 s: ~36 min of training + ~10 min of measuring
    "bench": PeftSizes(train_pool=20000, dev=None, steps=500, batch_size=32, max_length=64,
                       probe_train=2000, probe_eval=1000, wise_ft_step=0.1, cka_sentences=256,
                       speed_sentences=512, latency_sentences=32, save_every=100,
                       timing_rounds=3, timing_steps=10),
    # notebook 07 in the quick profile (<= 180 s with everything around it): quick's methods,
    # steps and dev set, a smaller probe, fewer CKA / speed sentences and one timing round.
    # Measuring, not training, is what costs: every method predicts all 872 dev sentences, and
    # so does every WiSE-FT point
    "notebook": PeftSizes(train_pool=2000, dev=None, steps=60, batch_size=16, max_length=64,
                          probe_train=300, probe_eval=200, wise_ft_step=0.25, cka_sentences=64,
                          speed_sentences=128, latency_sentences=8, save_every=30,
                          timing_rounds=1, timing_steps=5),
    # one GPU, bert-base-uncased: all of SST-2 (~1 epoch), inference measured on the CPU
    "full": PeftSizes(train_pool=None, dev=None, steps=2000, batch_size=32, max_length=128,
                      probe_train=5000, probe_eval=2000, wise_ft_step=0.1, cka_sentences=512,
                      speed_sentences=872, latency_sentences=64, save_every=500,
                      timing_rounds=3, timing_steps=20),
}


def cap_sizes(sizes: PeftSizes, max_examples: Optional[int] = None,
              max_steps: Optional[int] = None) -> PeftSizes:
    """``sizes`` with every set cut to ``max_examples`` sentences and every training run to
    ``max_steps`` steps (``--max-examples`` / ``--max-steps``: smoke runs of a profile)."""
    return common.cap_fields(sizes, max_examples, max_steps, (
        "train_pool", "dev", "probe_train", "probe_eval", "cka_sentences", "speed_sentences",
        "latency_sentences"), ("steps", "timing_steps"))


def _classify_view(sizes: PeftSizes) -> classify.ClassifySizes:
    """The same sizes in the form classify's ``load_data`` and ``measure`` read (one training
    pool: its teacher and student sets are the same sentences here)."""
    return classify.ClassifySizes(
        teacher_train=sizes.train_pool, student_train=sizes.train_pool, dev=sizes.dev,
        augment_per_sentence=0, max_length=sizes.max_length, teacher_epochs=1, student_epochs=1,
        batch_size=SPEED_BATCH, speed_sentences=sizes.speed_sentences,
        latency_sentences=sizes.latency_sentences)


# ----------------------------------------------------------------------------- 1. data

@dataclasses.dataclass
class PeftData:
    """Everything the methods are trained and measured on, encoded once."""

    task: str
    label_names: list[str]
    tokenizer: Any
    pad_id: int
    train_items: list[dict]   #: SST-2 training pool
    dev_items: list[dict]     #: SST-2 dev (accuracy, McNemar, throughput)
    dev_idx: list[int]
    cka_batches: list[dict]   #: the first ``cka_sentences`` dev sentences, padded batches
    probe_train: list[dict]   #: CoNLL-2003 train sentences, a POS tag on each word's first piece
    probe_eval: list[dict]    #: CoNLL-2003 valid sentences, same form


def encode_pos(tokenizer: Any, sentences: Any, max_length: int) -> list[dict]:
    """CoNLL sentences with their POS tags on each word's first sub-token (-100 elsewhere)."""
    from ktlab.data import POS_LABELS, encode_tagged
    tag_id = {t: i for i, t in enumerate(POS_LABELS)}
    tags = [[tag_id[t] for t in row] for row in sentences["pos_tags"]]
    items = encode_tagged(tokenizer, sentences["tokens"], tags, max_length)
    return [{k: it[k] for k in ("input_ids", "token_type_ids", "labels")} for it in items]


def _batches(items: Sequence[dict], pad_id: int, batch_size: int = 64,
             by_length: bool = False) -> list[dict]:
    from ktlab.data import PadCollator
    collate = PadCollator(pad_id)
    if by_length:  # less padding; probe features do not depend on the order
        items = sorted(items, key=lambda it: len(it["input_ids"]))
    return [collate(list(items[i:i + batch_size])) for i in range(0, len(items), batch_size)]


def load_data(sizes: PeftSizes, seed: int, teacher: str = "minilm",
              data_dir: Optional[Path] = None) -> PeftData:
    """SST-2 (classify's seeded, stratified subsets), the CKA sentences and the CoNLL-2003 POS
    probe sets (``train`` to fit, ``valid`` to score), tokenised for ``teacher``."""
    from ktlab.data import load_conll, subset
    from ktlab.models import load_tokenizer
    sst = classify.load_data(_classify_view(sizes), seed, data_dir)
    tokenizer = load_tokenizer(teacher)
    pad_id = tokenizer.pad_token_id or 0
    train, dev = (classify.encode(tokenizer, sst[s]["sentence"], sst[s]["label"],
                                  sizes.max_length) for s in ("train", "dev"))
    probe = {split: encode_pos(tokenizer, subset(load_conll(split, data_dir), n, seed),
                               sizes.max_length)
             for split, n in (("train", sizes.probe_train), ("valid", sizes.probe_eval))}
    return PeftData(task=sst["task"], label_names=sst["label_names"], tokenizer=tokenizer,
                    pad_id=pad_id, train_items=train, dev_items=dev,
                    dev_idx=[int(i) for i in sst["dev"]["idx"]],
                    cka_batches=_batches(dev[: sizes.cka_sentences], pad_id),
                    probe_train=probe["train"], probe_eval=probe["valid"])


# ----------------------------------------------------------------------------- 2, 4. models

def pretrained_model(teacher: str, num_labels: int, seed: int) -> nn.Module:
    """The untouched classifier every method starts from (seeded: the same new head)."""
    return classify.build_teacher(teacher, num_labels, seed)


def _peft_lora(model: nn.Module, rank: int) -> nn.Module:
    """The same LoRA through the ``peft`` library. Its A matrices are redrawn from the RNG state
    :func:`ktlab.transfer.peft.apply_lora` would draw them from, layer by layer in the same order
    (and B = 0), so both implementations start from identical weights: any difference after
    training belongs to the implementation, not to the luck of the draw."""
    import warnings

    import peft
    rng = torch.get_rng_state()
    with warnings.catch_warnings():  # transformers' deprecation notice for peft's own call
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        wrapped = peft.get_peft_model(model, peft.LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=list(LORA_TARGETS), lora_dropout=0.0))
    torch.set_rng_state(rng)
    with torch.no_grad():
        for module in wrapped.modules():
            if isinstance(module, peft.tuners.lora.Linear):
                nn.init.kaiming_uniform_(module.lora_A["default"].weight, a=math.sqrt(5))
                nn.init.zeros_(module.lora_B["default"].weight)
    for name, p in wrapped.named_parameters():  # peft freezes the new head too: keep it trained
        if is_head(name, TASK_HEAD):
            p.requires_grad_(True)
    return wrapped


def apply_method(model: nn.Module, method: Method) -> nn.Module:
    """Freeze, wrap or extend ``model`` as ``method`` says; returns the model to train (peft
    returns a wrapper). Every method keeps the classification head trainable."""
    from ktlab.transfer import freeze, peft as kpeft, regularize
    family = method.family
    if family == "head":
        freeze.freeze_all_but_head(model)
    elif family == "freeze":  # k = half the layers, with the embeddings below them
        freeze.freeze_bottom_k(model, model.config.num_hidden_layers // 2)
    elif family == "bitfit":
        kpeft.apply_bitfit(model)
    elif family == "lora":
        kpeft.apply_lora(model, r=method.rank, alpha=2 * method.rank, dropout=0.0,
                         target_modules=LORA_TARGETS)
    elif family == "adapters":
        kpeft.apply_adapters(model, bottleneck=ADAPTER_BOTTLENECK)
    elif family == "mixout":
        regularize.apply_mixout(model, MIXOUT_P)
    elif family == "peft-lora":
        return _peft_lora(model, method.rank)
    elif family not in ("full", "l2sp"):
        raise ConfigError(f"unknown method family {family!r}")
    return model


def build_model(method: Method, teacher: str, num_labels: int, seed: int) -> nn.Module:
    """The pretrained classifier, seeded (every method starts from the same head), with
    ``method`` applied."""
    return apply_method(pretrained_model(teacher, num_labels, seed), method)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def saved_bytes(model: nn.Module, method: Method) -> int:
    """Bytes on disk of what a deployment must keep beside the shared pretrained weights: the
    trainable tensors for PEFT methods, the whole state dict for those that rewrite every weight."""
    state = (trainable_state(model) if method.saves == "trainable" else
             {k: v.detach().clone() for k, v in model.state_dict().items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(state, path)
        return path.stat().st_size


# ----------------------------------------------------------------------------- 4. training

def _rss_bytes() -> Optional[int]:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """``gc`` plus glibc's ``malloc_trim``: memory freed by an earlier run goes back to the OS,
    else the next run reuses it without the resident size growing (and its peak reads low)."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak_mb``: how far memory rose in the block.

    CPU: the resident set size, sampled every ``interval`` s by a background thread, above the
    baseline taken on entry. CUDA: ``max_memory_allocated`` above the allocation on entry (it
    includes the weights, which the Trainer moves to the GPU inside the block)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak_mb, self.kind = interval, None, "none"
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self._base, self.kind = torch.cuda.memory_allocated(), "cuda max_memory_allocated"
            return self
        _release_free_memory()
        self._base = self._peak = _rss_bytes()
        if self._base is not None:
            self.kind = "cpu peak RSS increase"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self._cuda:
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2 ** 20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.peak_mb = (self._peak - self._base) / 2 ** 20


def make_optimizer(model: nn.Module, method: Method) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: the method's at ``method.lr``, the new head's at
    :data:`HEAD_LR`, with the Trainer's decay rule (none on biases and LayerNorm). L2-SP gets no
    weight decay: its penalty is the pull (toward the source weights, not toward 0)."""
    from ktlab.train import parameter_groups
    decay = 0.0 if method.family == "l2sp" else WEIGHT_DECAY
    head = {id(p) for n, p in model.named_parameters() if is_head(n, TASK_HEAD)}
    groups = []
    for group in parameter_groups(model, decay):
        for in_head, lr in ((True, HEAD_LR), (False, method.lr)):
            params = [p for p in group["params"] if (id(p) in head) == in_head]
            if params:
                groups.append({"params": params, "lr": lr,
                               "weight_decay": group["weight_decay"]})
    return torch.optim.AdamW(groups, lr=method.lr)


def _l2sp_loss(model: nn.Module) -> Callable:
    """Cross-entropy + the L2-SP penalty toward the weights the model has now (the source)."""
    from ktlab.train import default_loss
    from ktlab.transfer.regularize import snapshot, with_l2sp
    reference = {n: w for n, w in snapshot(model).items() if not is_head(n, TASK_HEAD)}
    penalised = with_l2sp(default_loss, reference, L2SP_ALPHA, L2SP_BETA)

    def loss_fn(m: nn.Module, batch: dict) -> torch.Tensor:
        device = batch["input_ids"].device
        for name, w in reference.items():  # once: the reference follows the model to its device
            if w.device != device:
                reference[name] = w.to(device)
        return penalised(m, batch)

    return loss_fn


def train_method(model: nn.Module, method: Method, data: PeftData, sizes: PeftSizes,
                 seed: int, work_dir: Path, progress: bool = False,
                 callbacks: Iterable[StageCallback] = ()) -> dict:
    """Train ``model`` in place for ``sizes.steps`` steps through classify's resumable Trainer
    run (checkpoints every ``save_every`` steps; a finished run is read back from
    ``work_dir/model.pt``). Returns the history, seconds per step and the memory peak."""
    finished = (Path(work_dir) / "model.pt").is_file()
    epochs = max(1, math.ceil(sizes.steps * sizes.batch_size / len(data.train_items)))
    with PeakMemory() as memory:
        history = common.train_resumable(
            model, data.train_items, None, Path(work_dir), method.name, callbacks, lr=method.lr,
            epochs=epochs, batch_size=sizes.batch_size, seed=seed,
            loss_fn=_l2sp_loss(model) if method.family == "l2sp" else None, pad_id=data.pad_id,
            weight_decay=WEIGHT_DECAY, warmup_ratio=sizes.warmup_ratio, max_steps=sizes.steps,
            save_every=sizes.save_every, progress=progress,
            optimizer=make_optimizer(model, method))
    steps = history["step"][-1] if history["step"] else 0
    return {"steps": steps, "train_seconds": history["train_seconds"],
            "seconds_per_step": round(history["train_seconds"] / max(steps, 1), 4),
            "peak_memory_mb": None if finished or memory.peak_mb is None
            else round(memory.peak_mb, 1), "memory_measure": memory.kind, "history": history}


# ----------------------------------------------------------------------------- 4. measuring

def measure_method(model: nn.Module, method: Method, data: PeftData, sizes: PeftSizes) -> dict:
    """Dev accuracy with its exact 95% interval and the predictions, parameter counts, the
    size of what must be saved and CPU throughput at batch :data:`SPEED_BATCH` (classify's
    ``measure``)."""
    rec = classify.measure(method.name, method.family, method.name, model, data.dev_items,
                           _classify_view(sizes), data.pad_id)
    for key in ("student", "condition", "_logits"):
        rec.pop(key)
    size = saved_bytes(model, method)
    rec.update(family=method.family, lr=method.lr, rank=method.rank, saves=method.saves,
               trainable_pct=round(100 * rec["trainable_params"] / rec["params"], 4),
               saved_bytes=size, saved_mb=round(size / 2 ** 20, 3))
    return rec


def merged(model: nn.Module, method: Method) -> nn.Module:
    """The model as it is served: LoRA's update folded into W (ktlab ``merge_lora`` in place,
    peft ``merge_and_unload``); every other method is returned unchanged."""
    from ktlab.transfer.peft import merge_lora
    if method.family == "lora":
        merge_lora(model)
    elif method.family == "peft-lora":
        return model.merge_and_unload()
    return model


# ----------------------------------------------------------------------------- 3. the probe

@dataclasses.dataclass
class Probe:
    """A linear POS tagger on last-layer features, centred and scaled with the pretrained
    encoder's statistics. Trained once; every method is scored with these same weights."""

    weight: torch.Tensor       #: [features, tags]
    bias: torch.Tensor         #: [tags]
    mean: torch.Tensor         #: [features]
    scale: torch.Tensor        #: one number for all features (see :func:`fit_probe`)
    pretrained_accuracy: float = float("nan")
    train_words: int = 0

    def accuracy(self, features: torch.Tensor, tags: torch.Tensor) -> float:
        logits = ((features - self.mean) / self.scale) @ self.weight + self.bias
        return float((logits.argmax(-1) == tags).float().mean())


@torch.no_grad()
def probe_features(model: nn.Module, items: Sequence[dict], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer states of each word's first sub-token (the tagged positions) and the tags."""
    from ktlab.data import IGNORE_INDEX
    from ktlab.transfer.forgetting import token_features
    batches = _batches(items, pad_id, by_length=True)
    features = token_features(model, batches, layers=[-1])[0]
    tags = torch.cat([b["labels"][b["attention_mask"].bool()] for b in batches])
    keep = tags != IGNORE_INDEX
    return features[keep], tags[keep]


def fit_probe(features: torch.Tensor, tags: torch.Tensor, num_tags: int, steps: int = 100,
              l2: float = 1e-3) -> Probe:
    """Multinomial logistic regression by full-batch L-BFGS from zero weights (deterministic:
    no random draw), with a small L2 term so separable data cannot blow the weights up.

    Features are centred per dimension but scaled by *one* number: MiniLM's last layer has
    dimensions that are constant on every token, and dividing each dimension by its own spread
    would turn the tiny shift fine-tuning gives them into a huge input (a 3-step run then
    "forgets" 20-60 points). With a single scale the probe reads real drift only."""
    mean = features.mean(0)
    scale = (features - mean).pow(2).mean().sqrt().clamp_min(1e-12)
    z = (features - mean) / scale
    weight = torch.zeros(z.shape[1], num_tags, requires_grad=True)
    bias = torch.zeros(num_tags, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (nn.functional.cross_entropy(z @ weight + bias, tags)
                + l2 / 2 * weight.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(weight.detach(), bias.detach(), mean, scale, train_words=len(tags))


def probe_accuracy(probe: Probe, model: nn.Module, data: PeftData) -> float:
    """The probe's accuracy on ``model``'s features of the CoNLL valid sentences."""
    return probe.accuracy(*probe_features(model, data.probe_eval, data.pad_id))


def train_probe(pretrained: nn.Module, data: PeftData, sizes: PeftSizes) -> Probe:
    """Fit the POS probe on the *pretrained* encoder's features: what the source knows."""
    from ktlab.data import POS_LABELS
    features, tags = probe_features(pretrained, data.probe_train, data.pad_id)
    probe = fit_probe(features, tags, len(POS_LABELS), sizes.probe_steps)
    probe.pretrained_accuracy = probe_accuracy(probe, pretrained, data)
    return probe


# ----------------------------------------------------------------------------- 4. forgetting

def measure_forgetting(model: nn.Module, pretrained: nn.Module, probe: Probe,
                       data: PeftData) -> dict:
    """Linear CKA to the pretrained encoder at every layer (1 = unchanged up to rotation and
    scale) and the POS probe's accuracy on ``model``'s features; the drop in points is the
    forgetting. Pass LoRA models :func:`merged`."""
    from ktlab.transfer.forgetting import cka_by_layer
    cka = cka_by_layer(model, pretrained, data.cka_batches)
    acc = probe_accuracy(probe, model, data)
    return {"cka_by_layer": [round(c, 5) for c in cka], "cka_last": round(cka[-1], 5),
            "probe_accuracy": round(acc, 5),
            "probe_drop_points": round(100 * (probe.pretrained_accuracy - acc), 3)}


def run_method(method: Method, data: PeftData, pretrained: nn.Module, probe: Probe,
               sizes: PeftSizes, seed: int, teacher: str, work_dir: Path,
               progress: bool = False, callbacks: Iterable[StageCallback] = ()
               ) -> tuple[dict, nn.Module]:
    """Stage 4 for one method: build, train, measure, merge, measure forgetting. Returns the
    record and the (merged) model."""
    model = build_model(method, teacher, len(data.label_names), seed)
    training = train_method(model, method, data, sizes, seed, work_dir, progress, callbacks)
    rec = measure_method(model, method, data, sizes)
    model = merged(model, method)
    if method.family in LORA_FAMILIES:
        speed = classify.measure_speed(model, data.dev_items[: sizes.speed_sentences],
                                       data.pad_id, SPEED_BATCH, sizes.latency_sentences)
        rec["throughput_merged_sps"] = round(speed["throughput_sps"], 3)
    rec["forgetting"] = measure_forgetting(model, pretrained, probe, data)
    rec.update(training)
    return rec, model


# ----------------------------------------------------------------------------- 5. WiSE-FT

def wise_ft_frontier(full_model: nn.Module, pretrained: nn.Module, probe: Probe,
                     data: PeftData, sizes: PeftSizes) -> list[dict]:
    """SST-2 dev accuracy and probe accuracy of ``beta W_ft + (1 - beta) W_pre`` on a beta grid
    (Wortsman et al. 2022): the encoder is blended, the head stays the fine-tuned one. Leaves
    ``full_model`` at its fine-tuned weights (beta = 1)."""
    from ktlab.transfer.regularize import state_of, wise_ft_sweep
    source = {k: v for k, v in state_of(pretrained).items() if not is_head(k, TASK_HEAD)}
    n = max(1, round(1 / sizes.wise_ft_step))
    labels = torch.tensor([it["labels"] for it in data.dev_items])

    def evaluate(model: nn.Module) -> dict:
        preds = classify.predict(model, data.dev_items, data.pad_id).argmax(-1)
        return {"dev_accuracy": round(float((preds == labels).float().mean()), 5),
                "probe_accuracy": round(probe_accuracy(probe, model, data), 5)}

    return wise_ft_sweep(full_model, source, state_of(full_model),
                         [round(i / n, 4) for i in range(n + 1)], evaluate)


# ----------------------------------------------------------------------------- 6. vs peft

def _seconds_per_step(model: nn.Module, method: Method, batches: Sequence[dict]) -> float:
    """Wall seconds of one optimiser step as the Trainer takes it (forward, backward, clipping,
    AdamW) on the training device, after one warm-up step."""
    from ktlab.train import default_loss
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    opt = make_optimizer(model, method)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: dict) -> None:
        default_loss(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(batches)


def time_lora_vs_peft(teacher: str, data: PeftData, sizes: PeftSizes, seed: int) -> dict:
    """Training-step and inference speed of ktlab's LoRA and peft's, on freshly built models
    (speed depends on shapes, not on weight values), interleaved round by round so that both
    meet the same machine load. Keeps the median of the rounds."""
    names = ("lora", "peft-lora")
    models = {n: build_model(METHODS[n], teacher, len(data.label_names), seed) for n in names}
    n_batches = max(1, min(sizes.timing_steps, len(data.train_items) // sizes.batch_size))
    batches = _batches(data.train_items[: n_batches * sizes.batch_size], data.pad_id,
                       sizes.batch_size)
    runs: dict[str, dict[str, list]] = {n: {"s": [], "sps": []} for n in names}
    for _ in range(sizes.timing_rounds):
        for name, model in models.items():
            runs[name]["s"].append(_seconds_per_step(model, METHODS[name], batches))
            runs[name]["sps"].append(classify.measure_speed(
                model, data.dev_items[: sizes.speed_sentences], data.pad_id, SPEED_BATCH,
                sizes.latency_sentences)["throughput_sps"])
    med = {n: {"seconds_per_step": round(statistics.median(r["s"]), 4),
               "throughput_sps": round(statistics.median(r["sps"]), 3)}
           for n, r in runs.items()}
    return {"rounds": sizes.timing_rounds, "steps_per_round": len(batches), **med,
            "train_throughput_ratio": round(med["peft-lora"]["seconds_per_step"]
                                            / med["lora"]["seconds_per_step"], 3),
            "inference_throughput_ratio": round(med["lora"]["throughput_sps"]
                                                / med["peft-lora"]["throughput_sps"], 3)}


def compare_with_peft(records: Sequence[dict], labels: Sequence[int],
                      timing: Optional[dict] = None) -> Optional[dict]:
    """ktlab LoRA against peft LoRA: accuracy difference in points (McNemar p), agreement of
    their predictions, and throughput ratios (> 1: ktlab is faster): from the side-by-side
    ``timing`` where given, and from the two training runs."""
    recs = {r["name"]: r for r in records}
    ours, theirs = recs.get("lora"), recs.get("peft-lora")
    if not ours or not theirs:
        return None
    runs = {"train_throughput_ratio": round(theirs["seconds_per_step"]
                                            / max(ours["seconds_per_step"], 1e-12), 3),
            "inference_throughput_ratio": round(ours["throughput_sps"]
                                                / theirs["throughput_sps"], 3)}
    same = sum(a == b for a, b in zip(ours["dev_predictions"], theirs["dev_predictions"]))
    side = timing or {}
    return {"accuracy": classify._paired(ours, theirs, labels),
            "prediction_agreement": round(same / max(len(labels), 1), 5),
            "train_throughput_ratio": side.get("train_throughput_ratio",
                                               runs["train_throughput_ratio"]),
            "inference_throughput_ratio": side.get("inference_throughput_ratio",
                                                   runs["inference_throughput_ratio"]),
            "measured": "side by side" if timing else "training runs",
            "from_training_runs": runs, "side_by_side": timing}


# ----------------------------------------------------------------------------- 7. report

def _goal(text: str, met: Optional[bool], **numbers: Any) -> dict:
    return {"goal": text, "met": met, **numbers}


def goals(results: dict) -> dict:
    """The issue's goals, each met / not met (``None``: a method it needs was not run) with the
    numbers it was decided on."""
    recs = {r["name"]: r for r in results["methods"]}
    full, out = recs.get("full"), {}
    for key, name, points, share, cmp in (("lora_near_full", "lora", 1.0, 2.0, "<="),
                                          ("bitfit_near_full", "bitfit", 2.0, 0.2, "<")):
        text = (f"{name} within {points:g} point(s) of full fine-tuning at {cmp} {share:g}% "
                "trainable")
        rec = recs.get(name)
        if not (rec and full):
            out[key] = _goal(text, None, missing=[n for n in ("full", name) if n not in recs])
            continue
        below = round(100 * (full["dev_accuracy"] - rec["dev_accuracy"]), 2)
        small = rec["trainable_pct"] <= share if cmp == "<=" else rec["trainable_pct"] < share
        out[key] = _goal(text, below <= points and small, points_below_full=below,
                         trainable_pct=rec["trainable_pct"])
    vs = results.get("vs_peft")
    out["lora_speed_vs_peft"] = _goal(
        "ktlab LoRA >= 0.95x peft LoRA's training throughput",
        None if vs is None else vs["train_throughput_ratio"] >= 0.95,
        ratio=None if vs is None else vs["train_throughput_ratio"])
    drops = {n: r["forgetting"]["probe_drop_points"] for n, r in recs.items()}
    adapting = {n: d for n, d in drops.items() if recs[n]["family"] != "head"}
    out["least_forgetting"] = _goal(
        "name the method with the least forgetting (smallest POS-probe drop)",
        bool(drops) or None, method=min(drops, key=drops.get) if drops else None,
        probe_drop_points=min(drops.values()) if drops else None,
        among_encoder_changing=min(adapting, key=adapting.get) if adapting else None,
        note="head-only leaves the encoder untouched: its drop is 0 by construction")
    return out


def markdown_table(results: dict) -> str:
    """One row per method, then the goals."""
    head = ("| method | dev acc (95% CI) | McNemar p vs full | trainable (count, %) | s/step | "
            "peak MB | saved MB | probe acc | probe drop | CKA last layer |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in results["methods"]:
        lo, hi = r["dev_accuracy_ci95"]
        vs, fg = r.get("vs_full"), r["forgetting"]
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        rows.append(
            f"| {r['name']} | {100 * r['dev_accuracy']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | "
            f"{'-' if vs is None else format(vs['p_value'], '.3g')} | "
            f"{r['trainable_params']:,} ({r['trainable_pct']:.3g}%) | "
            f"{r['seconds_per_step']:.3f} | {peak} | {r['saved_mb']:.2f} | "
            f"{100 * fg['probe_accuracy']:.1f} | {fg['probe_drop_points']:+.2f} | "
            f"{fg['cka_last']:.3f} |")
    lines = [head, *rows, "", f"POS probe on the pretrained encoder: "
             f"{100 * results['forgetting']['pretrained_probe_accuracy']:.1f}%", ""]
    for g in results.get("goals", {}).values():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        numbers = ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("goal", "met"))
        lines.append(f"- {g['goal']}: **{verdict}** ({numbers})")
    return "\n".join(lines)


def _label_points(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """Name each point; a name whose point sits on an earlier one (ktlab's and peft's LoRA
    often coincide) goes one line lower instead of on top of it."""
    seen: list[tuple[float, float]] = []
    for text, x, y in points:
        same = sum(math.isclose(x, a, rel_tol=1e-3) and math.isclose(y, b, rel_tol=1e-3)
                   for a, b in seen)
        ax.annotate(text, (x, y), fontsize=8, xytext=(4, 3 - 10 * same),
                    textcoords="offset points")
        seen.append((x, y))


def plot_accuracy_vs_trainable(results: dict) -> Any:
    """Dev accuracy (with its 95% interval) against the share of parameters trained (log x)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results["methods"]:
        acc, (lo, hi) = 100 * r["dev_accuracy"], r["dev_accuracy_ci95"]
        ax.errorbar(r["trainable_pct"], acc, yerr=[[acc - 100 * lo], [100 * hi - acc]],
                    fmt="o", capsize=3)
    _label_points(ax, [(r["name"], r["trainable_pct"], 100 * r["dev_accuracy"])
                       for r in results["methods"]])
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of the model, log scale)")
    ax.set_ylabel("SST-2 dev accuracy (%, 95% CI)")
    ax.set_title(f"Accuracy vs parameters trained ({results['teacher_name']}, "
                 f"{results['profile']} profile, {results['sizes']['steps']} steps)")
    ax.grid(alpha=0.3)
    return fig


def plot_wise_ft(results: dict) -> Any:
    """The WiSE-FT frontier (beta-labelled) and every method as a point: SST-2 accuracy
    against the retained POS-probe accuracy."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    wise = results.get("wise_ft") or []
    if wise:
        xs, ys = [100 * w["probe_accuracy"] for w in wise], [100 * w["dev_accuracy"] for w in wise]
        ax.plot(xs, ys, "-o", color="tab:gray", label="WiSE-FT (full <-> pretrained)")
        for w, x, y in zip(wise, xs, ys):
            ax.annotate(f"β={w['beta']:g}", (x, y), fontsize=7, xytext=(-8, -11),
                        textcoords="offset points")
    points = [(r["name"], 100 * r["forgetting"]["probe_accuracy"], 100 * r["dev_accuracy"])
              for r in results["methods"]]
    for _, x, y in points:
        ax.scatter(x, y, s=40, zorder=3)
    _label_points(ax, points)
    ax.set_xlabel("POS-probe accuracy on the model's features (%): retained skill")
    ax.set_ylabel("SST-2 dev accuracy (%): new task")
    ax.set_title("Task accuracy vs forgetting: WiSE-FT frontier and each method")
    ax.grid(alpha=0.3)
    if wise:
        ax.legend(fontsize=8)
    return fig


def write_results(results: dict, out: Path, plots: bool = True) -> None:
    """``results.json`` (atomic), ``table.md`` and the two PNG plots, via :mod:`.common`."""
    from ktlab.experiments import common
    common.write_results(results, Path(out), markdown_table(results),
                         {"accuracy_vs_trainable": plot_accuracy_vs_trainable,
                          "wise_ft_frontier": plot_wise_ft}, plots)


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (the file or its folder) and check its schema."""
    from ktlab.experiments import common
    return common.load_results(path, SCHEMA, "peft")


# ----------------------------------------------------------------------------- run = stages

@dataclasses.dataclass
class Prepared:
    """What stages 1-3 produce and every method run reads."""

    teacher: str
    seed: int
    sizes: PeftSizes
    data: PeftData
    pretrained: nn.Module
    probe: Probe
    cache: Path    #: ``<out>/cache``
    key: str       #: the run's cache key (task, teacher, seed, sizes, settings)


def _read_cached(file: Path, key: str) -> Optional[Any]:
    if not file.is_file():
        return None
    blob = json.loads(file.read_text())
    return blob["value"] if blob.get("key") == key else None


def _write_cached(file: Path, key: str, value: Any) -> None:
    """Write atomically (a ``.tmp`` file, then ``os.replace``): never a half-written record."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "value": value}))
    os.replace(tmp, file)


def prepare(teacher: str, seed: int, sizes: PeftSizes, out: Path,
            data_dir: Optional[Path] = None) -> Prepared:
    """Stages 1-3: data, the pretrained reference and the probe (cached in ``probe.pt``)."""
    from ktlab.train import atomic_save
    data = load_data(sizes, seed, teacher, data_dir)
    key = common.cache_key(schema=SCHEMA, task=data.task, labels=data.label_names,
                             teacher=teacher, seed=seed, sizes=dataclasses.asdict(sizes),
                             settings=settings())
    pretrained = pretrained_model(teacher, len(data.label_names), seed)
    cache, probe_file = out / "cache", out / "cache" / "probe.pt"
    blob = torch.load(probe_file, weights_only=False) if probe_file.is_file() else {}
    if blob.get("key") == key:
        probe = Probe(**blob["probe"])
    else:
        probe = train_probe(pretrained, data, sizes)
        atomic_save({"key": key, "probe": dataclasses.asdict(probe)}, probe_file)
    return Prepared(teacher, seed, sizes, data, pretrained, probe, cache, key)


def _method_key(prep: Prepared, method: Method) -> str:
    return common.cache_key(run=prep.key, method=dataclasses.asdict(method))


def _work_dir(prep: Prepared, method: Method) -> Path:
    """Where ``method``'s training checkpoints (and finished weights) live."""
    return prep.cache / "train" / f"{method.name}-{_method_key(prep, method)}"


def method_record(prep: Prepared, name: str, progress: bool = False,
                  callbacks: Iterable[StageCallback] = ()) -> tuple[dict, Optional[nn.Module]]:
    """``cache/<name>.json`` when it holds this configuration's record, else :func:`run_method`
    (its record is then cached, and its training folder removed except full's, which WiSE-FT
    reads). The model is ``None`` for a cached record."""
    method = METHODS[name]
    key = _method_key(prep, method)
    file = prep.cache / f"{name}.json"
    cached = _read_cached(file, key)
    if cached is not None:
        return {**cached, "cached": True}, None
    work = _work_dir(prep, method)
    rec, model = run_method(method, prep.data, prep.pretrained, prep.probe, prep.sizes,
                            prep.seed, prep.teacher, work, progress, callbacks)
    _write_cached(file, key, rec)
    if name != "full":
        shutil.rmtree(work, ignore_errors=True)
    return {**rec, "cached": False}, model


def cached_wise_ft(prep: Prepared, full_model: Optional[nn.Module]) -> list[dict]:
    """:func:`wise_ft_frontier`, cached in ``cache/wise_ft.json``; reloads full's weights from
    its training folder when its record came from the cache."""
    full = METHODS["full"]
    key, file = _method_key(prep, full), prep.cache / "wise_ft.json"
    rows = _read_cached(file, key)
    if rows is None:
        if full_model is None:
            full_model = build_model(full, prep.teacher, len(prep.data.label_names), prep.seed)
            train_method(full_model, full, prep.data, prep.sizes, prep.seed,
                         _work_dir(prep, full))
        rows = wise_ft_frontier(full_model, prep.pretrained, prep.probe, prep.data, prep.sizes)
        _write_cached(file, key, rows)
    return rows


def cached_lora_timing(prep: Prepared) -> dict:
    """:func:`time_lora_vs_peft`, cached in ``cache/lora_timing.json``."""
    file = prep.cache / "lora_timing.json"
    timing = _read_cached(file, prep.key)
    if timing is None:
        timing = time_lora_vs_peft(prep.teacher, prep.data, prep.sizes, prep.seed)
        _write_cached(file, prep.key, timing)
    return timing


def assemble_results(prep: Prepared, profile: str, records: list[dict], wise: list[dict],
                     vs_peft: Optional[dict], started: float) -> dict:
    """The results dict (schema :data:`SCHEMA`): every method's record with its McNemar test
    against full, the forgetting summary, the WiSE-FT frontier, the peft comparison, the goals."""
    labels = [int(it["labels"]) for it in prep.data.dev_items]
    full = next((r for r in records if r["name"] == "full"), None)
    for r in records:
        r["vs_full"] = classify._paired(r, full, labels) if full and r is not full else None
    data = prep.data
    results = {
        "schema": SCHEMA, "task": data.task, "label_names": data.label_names, "profile": profile,
        "teacher_name": prep.teacher, "seed": prep.seed, "sizes": dataclasses.asdict(prep.sizes),
        "settings": settings(), "machine": describe_machine(), "cache_key": prep.key,
        **common.run_clock(started),
        "data": {"train_pool": len(data.train_items), "dev": len(data.dev_items),
                 "probe_train_sentences": len(data.probe_train),
                 "probe_eval_sentences": len(data.probe_eval),
                 "cka_sentences": sum(len(b["input_ids"]) for b in data.cka_batches)},
        "methods": records,
        "forgetting": {"pretrained_probe_accuracy": round(prep.probe.pretrained_accuracy, 5),
                       "probe": "CoNLL-2003 POS, linear, last layer, first sub-token",
                       "probe_train_words": prep.probe.train_words,
                       "by_method": {r["name"]: r["forgetting"] for r in records}},
        "wise_ft": wise, "vs_peft": vs_peft,
        "dev": {"idx": data.dev_idx, "labels": labels},
    }
    results["goals"] = goals(results)
    return results


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        methods: str | Sequence[str] | None = None, out_dir: str | Path = "runs/peft",
        seed: Optional[int] = None, sizes: Optional[PeftSizes] = None, use_cache: bool = True,
        plots: bool = True, progress: bool = False, callbacks: Iterable[StageCallback] = (),
        log: Callable[[str], None] = print, max_examples: Optional[int] = None,
        max_steps: Optional[int] = None) -> dict:
    """The whole experiment: :func:`prepare`, :func:`method_record` per method, the WiSE-FT
    frontier (needs ``full``), the peft comparison (needs ``lora`` and ``peft-lora``), then the
    results folder. Returns the results dict."""
    cfg, sizes = common.resolve(profile, teacher, seed, PROFILE_SIZES, sizes, cap_sizes,
                                max_examples, max_steps)
    names = parse_methods(methods or PROFILE_METHODS[cfg.profile])
    out, started = Path(out_dir), time.time()
    if not use_cache:
        shutil.rmtree(out / "cache", ignore_errors=True)
    log(f"[peft] {cfg.summary()} methods={','.join(names)} out={out}")
    prep = prepare(cfg.teacher, cfg.seed, sizes, out, cfg.data_dir)
    log(f"[peft] POS probe on the pretrained encoder: {prep.probe.pretrained_accuracy:.4f}")
    records, full_model = [], None
    for name in names:
        rec, model = method_record(prep, name, progress, callbacks)
        full_model = model if name == "full" else full_model
        records.append(rec)
        log(f"[peft] {name:<16} dev {rec['dev_accuracy']:.4f}  trainable "
            f"{rec['trainable_pct']:.3g}%  {rec['seconds_per_step']:.3f} s/step  probe drop "
            f"{rec['forgetting']['probe_drop_points']:+.2f}{'  (cached)' if rec['cached'] else ''}")
    wise = cached_wise_ft(prep, full_model) if "full" in names else []
    del full_model
    labels = [int(it["labels"]) for it in prep.data.dev_items]
    both = {"lora", "peft-lora"} <= set(names)
    vs_peft = compare_with_peft(records, labels, cached_lora_timing(prep) if both else None)
    if vs_peft:
        log(f"[peft] ktlab LoRA vs peft LoRA: {vs_peft['accuracy']['points']:+.2f} points "
            f"(McNemar p {vs_peft['accuracy']['p_value']:.3g}), training throughput x"
            f"{vs_peft['train_throughput_ratio']}, inference x"
            f"{vs_peft['inference_throughput_ratio']}")
    results = assemble_results(prep, cfg.profile, records, wise, vs_peft, started)
    results["capped"] = caps_record(max_examples, max_steps)
    write_results(results, out, plots=plots)
    log(markdown_table(results))
    log(f"[peft] wrote {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results
