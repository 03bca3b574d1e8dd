"""A thin, readable training loop on Hugging Face Accelerate.

Everything a fine-tuning or distillation run needs, in one file you can read top to bottom:

* device placement and multi-process data parallelism through :class:`accelerate.Accelerator`
  (the same code runs under ``python``, ``accelerate launch`` or ``torchrun``);
* bf16/fp16 autocast on CUDA (never on CPU, where it is slower and changes the numbers);
* AdamW with *decoupled* weight decay and no decay on biases and LayerNorm weights;
* a linear warm-up followed by linear decay of the learning rate;
* gradient accumulation and gradient-norm clipping;
* evaluation every ``eval_every`` optimiser steps, early stopping on a dev metric and the best
  checkpoint kept;
* atomic checkpoints (temporary file + rename) with the model, optimiser, scheduler, RNG states and
  the step, so that a resumed run ends with exactly the weights of an uninterrupted one;
* a :class:`History` that the plotting helpers read, ``tqdm.auto`` bars, optional TensorBoard.

Why not ``transformers.Trainer``? It does all this and far more, behind ~5,000 lines. The course
needs a loop a student can read in ten minutes; ``benchmarks/bench_trainer.py`` checks that the
small loop is not slower.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

LossFn = Callable[[nn.Module, dict], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], dict]

#: Parameter-name fragments that get no weight decay (BERT convention: biases and LayerNorm).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


@dataclasses.dataclass
class TrainConfig:
    """How to train. The defaults are BERT fine-tuning defaults (Devlin et al. 2019, App. A.3)."""

    lr: float = 2e-5
    epochs: int = 3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum_steps: int = 1
    max_grad_norm: Optional[float] = 1.0
    eval_every: Optional[int] = None       #: optimiser steps between evaluations; None = per epoch
    early_stopping_patience: Optional[int] = None  #: evaluations without improvement; None = off
    metric_name: str = "accuracy"          #: key of the eval dict that picks the best checkpoint
    greater_is_better: bool = True
    output_dir: Optional[str] = None       #: where checkpoints go; None keeps the best in memory
    seed: int = 0
    mixed_precision: str = "auto"          #: "auto" (bf16/fp16 on CUDA, off on CPU), "no", "bf16", "fp16"
    log_tensorboard: bool = False
    max_steps: Optional[int] = None        #: stop after this many optimiser steps (schedule too)
    # --- beyond the basic contract -------------------------------------------------------
    save_every: Optional[int] = None       #: optimiser steps between resumable checkpoints
    eval_batch_size: Optional[int] = None  #: defaults to 2 x batch_size
    log_every: int = 1                     #: optimiser steps between history entries
    progress: bool = True                  #: tqdm.auto bars
    load_best_at_end: bool = True          #: restore the best weights after fit()
    num_workers: int = 0
    length_bucketing: bool = False         #: batches of similar lengths (less padding on CPU)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("batch_size and grad_accum_steps must be >= 1, got "
                             f"{self.batch_size} and {self.grad_accum_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'auto', 'no', 'bf16' or 'fp16', "
                             f"got {self.mixed_precision!r}")
        if self.epochs < 1 and not self.max_steps:
            raise ValueError("epochs must be >= 1 (or set max_steps)")


@dataclasses.dataclass
class History:
    """What happened during :meth:`Trainer.fit`; plain lists so plotting and JSON are trivial."""

    step: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    eval_step: list[int] = dataclasses.field(default_factory=list)
    eval_metrics: list[dict] = dataclasses.field(default_factory=list)
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    best_checkpoint: Optional[str] = None
    metric_name: str = "accuracy"
    train_seconds: float = 0.0
    examples_seen: int = 0
    stopped_early: bool = False

    def eval_curve(self, key: Optional[str] = None) -> tuple[list[int], list[float]]:
        """(steps, values) of one eval metric, e.g. for ``plt.plot(*history.eval_curve())``."""
        key = key or self.metric_name
        return self.eval_step, [m[key] for m in self.eval_metrics]

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds else float("nan")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**data)

    def save_json(self, path: str | Path) -> None:
        _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))


# ----------------------------------------------------------------------------- optimiser + schedule

def adamw(groups: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW, with the fused kernel where torch has one for these tensors: the same update,
    computed in one pass over the weights (measured: the step is ~4x faster on a CPU, and
    ``transformers.Trainer`` uses it by default); the multi-tensor kernel otherwise."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def parameter_groups(model: nn.Module, weight_decay: float,
                     no_decay: Sequence[str] = NO_DECAY) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases/LayerNorm weights with decay 0.

    Decaying a LayerNorm gain pulls it toward 0 (it should sit near 1) and decaying a bias has no
    regularising effect, hence the BERT convention. Frozen parameters are left out.
    """
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (keep if any(nd in name for nd in no_decay) or param.ndim == 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int,
                        total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LR factor rises linearly to 1 over ``warmup_steps``, then falls linearly toward 0.

    Step ``i`` (0-based) of the warm-up uses ``(i + 1) / warmup_steps``; after it the factor is
    ``(total - i) / (total - warmup)``: the peak rate is used by the last warm-up step and the
    first decay step, and no step is wasted at learning rate 0 (unlike starting from 0)."""
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- losses and metrics

def _named_inputs(forward: Callable) -> Optional[frozenset[str]]:
    named = {name for name, p in inspect.signature(forward).parameters.items()
             if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    named.discard("self")
    return frozenset(named) or None


@functools.lru_cache(maxsize=None)
def _forward_keys_of(cls: type) -> Optional[frozenset[str]]:
    return _named_inputs(cls.forward)


def _forward_keys(model: nn.Module) -> Optional[frozenset[str]]:
    """The named inputs of ``model.forward``, cached per class; ``None`` when it only takes
    ``**kwargs``. Hugging Face models also take ``**kwargs`` (attention options), but a batch key
    such as ``teacher_logits`` must not leak into them, so only named inputs are passed."""
    if "forward" in vars(model):  # an instance-level override (rare): inspect it directly
        return _named_inputs(model.forward)
    return _forward_keys_of(type(model))


def model_inputs(model: nn.Module, batch: dict) -> dict:
    """The part of ``batch`` the model's ``forward`` accepts: extra keys such as
    ``teacher_logits`` or ``word_ids`` travel with the batch for other losses, not the model."""
    model = getattr(model, "module", model)  # DDP wrapper
    keys = _forward_keys(model)
    if keys is None:
        return dict(batch)
    return {k: v for k, v in batch.items() if k in keys}


def default_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """``model(**batch).loss`` after dropping keys the model does not accept.

    Models that return bare logits (ktlab's BiLSTM/CNN students and taggers) get cross-entropy
    on those logits against ``batch["labels"]`` (token-level logits flattened, -100 ignored),
    so every ktlab model trains with the default loss."""
    out = model(**model_inputs(model, batch))
    loss = _loss_of(out)
    if loss is not None:
        return loss
    labels = batch.get("labels")
    if labels is None:
        raise ValueError("the model returned no loss: the batch needs 'labels', or pass "
                         "loss_fn=(model, batch) -> loss to the Trainer")
    logits = logits_of(out)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels "
                         f"{tuple(labels.shape)}: expected labels of shape "
                         f"{tuple(logits.shape[:-1])}; pass loss_fn= for another loss")
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                       labels.reshape(-1).long(), ignore_index=-100)


def _loss_of(output: Any) -> Optional[torch.Tensor]:
    """``output.loss`` of a ``ModelOutput`` or dict; None for bare logits (or no loss)."""
    if hasattr(output, "loss"):
        return getattr(output, "loss", None)
    return output.get("loss") if isinstance(output, dict) else None


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a HF ``ModelOutput``, a dict or a plain tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError(f"cannot find logits in a {type(output).__name__}; return a tensor, a dict "
                    "with 'logits' or a ModelOutput")


def _default_metric(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    from ktlab.metrics import accuracy
    return {"accuracy": accuracy(logits, labels)}


def pad_cat(tensors: Sequence[torch.Tensor], pad_value: float = 0.0) -> torch.Tensor:
    """Concatenate along dim 0, padding dim 1 first when lengths differ (token-level logits of
    batches that were padded to different lengths)."""
    if not tensors:
        return torch.empty(0)
    if tensors[0].ndim >= 2 and len({t.shape[1] for t in tensors}) > 1:
        length = max(t.shape[1] for t in tensors)
        tensors = [torch.nn.functional.pad(t, [0, 0] * (t.ndim - 2) + [0, length - t.shape[1]],
                                           value=pad_value) for t in tensors]
    return torch.cat(list(tensors))


# ----------------------------------------------------------------------------- checkpoints

def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a crash while
    writing leaves the previous checkpoint intact instead of a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochSampler(torch.utils.data.Sampler):
    """A random permutation that depends only on ``(seed, epoch)``: a resumed run sees the same
    order as an uninterrupted one, and it never touches the global RNG (dropout's RNG)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())

    def __len__(self) -> int:
        return self.length


class LengthBucketSampler(EpochSampler):
    """Shuffled order in which each batch holds items of similar length (less padding).

    Per ``(seed, epoch)``: a random permutation is cut into pools of ``pool_batches`` batches,
    each pool is sorted by length and cut into batches, and the batches are shuffled. The
    DataLoader's own batching then cuts exactly these batches (the one short batch stays last).
    Like :class:`EpochSampler` it never touches the global RNG, so resume stays exact."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int,
                 pool_batches: int = 50) -> None:
        super().__init__(len(lengths), seed, shuffle=True)
        self.lengths, self.batch_size, self.pool = list(lengths), batch_size, pool_batches

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=gen).tolist()
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, self.length, size):
            pool = sorted(order[start:start + size], key=self.lengths.__getitem__)
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]  # at most one
        full = [b for b in batches if len(b) == self.batch_size]
        full = [full[i] for i in torch.randperm(len(full), generator=gen).tolist()]
        return iter([i for b in full + short for i in b])


def item_lengths(dataset: Any) -> list[int]:
    """Token counts of a dataset of ``{"input_ids": ...}`` items (for length bucketing)."""
    return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Fine-tune (or distil into) ``model`` on ``train_dataset``.

    ``train_dataset``: any map-style dataset of dicts (a list works) that ``collate_fn`` turns into
    a batch dict; the default collator is :class:`ktlab.data.PadCollator`.
    ``loss_fn(model, batch) -> loss``: defaults to ``model(**batch).loss`` (extra keys dropped).
    ``metric_fn(logits, labels) -> dict``: defaults to accuracy.
    ``callbacks``: callables ``cb(trainer, step)`` run after every optimiser step (tests use
    one to simulate an interruption).

    Read :meth:`fit` first: it is the whole loop, and each helper it calls does one named thing
    (one epoch, one micro-batch, one optimiser step, evaluate, keep the best, checkpoint).
    """

    def __init__(self, model: nn.Module, config: Optional[TrainConfig] = None,
                 train_dataset: Any = None, eval_dataset: Any = None,
                 collate_fn: Optional[Callable] = None, loss_fn: Optional[LossFn] = None,
                 metric_fn: Optional[MetricFn] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 callbacks: Iterable[Callable[["Trainer", int], None]] = ()) -> None:
        from accelerate import Accelerator

        self.config = config or TrainConfig()
        self.model = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        if collate_fn is None:
            from ktlab.data.collate import PadCollator
            pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
            collate_fn = PadCollator(pad_token_id=pad_id)
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn or default_loss
        self.metric_fn = metric_fn or _default_metric
        self.callbacks = list(callbacks)
        self._user_optimizer = optimizer
        self.accelerator = Accelerator(mixed_precision=self._precision())
        self.history = History(metric_name=self.config.metric_name)
        self.step = 0                                      # optimiser steps taken so far
        self.optimizer: Any = None                         # these two are built by fit()
        self.scheduler: Any = None
        self._wrapped: Optional[nn.Module] = None          # the model as Accelerate wrapped it
        self._best_state: Optional[dict] = None            # best weights, without output_dir
        self._patience_left = self.config.early_stopping_patience
        self._running_loss: Any = 0.0                      # sum over the step in progress ...
        self._micro = 0                                    # ... of this many micro-batches
        self._resume_rng: Optional[dict] = None
        self._writer: Any = None
        self._bar: Any = None

    # -- loaders and schedule length ----------------------------------------------------------
    def _precision(self) -> str:
        mp = self.config.mixed_precision
        if not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
                "1", "true", "yes"):
            return "no"  # autocast only on CUDA
        if mp == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return mp

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool,
                sampler_seed: Optional[int] = None) -> torch.utils.data.DataLoader:
        if dataset is None:
            raise ValueError("no dataset given: pass train_dataset/eval_dataset to the Trainer")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty; check the subset size or the split name")
        seed = self.config.seed if sampler_seed is None else sampler_seed
        if shuffle and self.config.length_bucketing:
            sampler: EpochSampler = LengthBucketSampler(item_lengths(dataset), batch_size, seed)
        else:
            sampler = EpochSampler(len(dataset), seed, shuffle=shuffle)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed))

    def _eval_loader(self, dataset: Any) -> Any:
        size = self.config.eval_batch_size or 2 * self.config.batch_size
        return self.accelerator.prepare_data_loader(self._loader(dataset, size, shuffle=False))

    def total_steps(self, batches_per_epoch: int) -> int:
        per_epoch = math.ceil(batches_per_epoch / self.config.grad_accum_steps)
        total = per_epoch * self.config.epochs
        if self.config.max_steps:
            total = self.config.max_steps if self.config.epochs < 1 else min(
                total, self.config.max_steps)
        return total

    # -- the training loop --------------------------------------------------------------------
    def fit(self, resume_from: Optional[str | Path] = None) -> History:
        """Train; ``resume_from`` is a checkpoint file or folder written by an earlier run with
        the same config (``"latest"`` means ``output_dir/checkpoint.pt``).

        For each epoch, for each batch: forward and backward; every ``grad_accum_steps``
        batches one optimiser step, then evaluate and checkpoint when they are due."""
        model, train_dl, total = self._prepare()
        epoch, skip = self._resume(resume_from)            # (0, 0) for a fresh run
        self._open_logs(total)
        start, stop = time.perf_counter(), self.step >= total
        model.train()
        while not stop and self._epochs_left(epoch):
            stop, epoch_done = self._train_epoch(model, train_dl, epoch, skip, total)
            skip = 0
            if not epoch_done:
                break                                      # stopped mid-epoch
            epoch += 1
            if not self.config.eval_every and self._unscored():   # evaluate once per epoch
                self._evaluate_during_training(model)
                stop = stop or self._patience_left == 0
        self._bar.close()
        self.history.train_seconds += time.perf_counter() - start
        self.history.stopped_early = self._patience_left == 0
        if self._unscored():
            self._evaluate_and_track()                     # the weights training ended with
        self._finish()
        return self.history

    def _train_epoch(self, model: nn.Module, train_dl: Any, epoch: int, skip: int,
                     total: int) -> tuple[bool, bool]:
        """One pass over the training data (what is left of it, on resume).

        Returns ``(stop, epoch_done)``: stop once ``total`` steps are done or the patience has
        run out; ``epoch_done`` is False when that happened before the epoch's last batch."""
        cfg = self.config
        batches = self._epoch_batches(train_dl, epoch, skip)
        n_batches = len(train_dl)
        for batch_in_epoch, batch in enumerate(batches, start=skip + 1):
            last = batch_in_epoch == n_batches
            if not self._forward_backward(model, batch, last_of_epoch=last):
                continue                                   # still accumulating gradients
            self._optimizer_step(model)
            if self.eval_dataset is not None and cfg.eval_every and \
                    self.step % cfg.eval_every == 0:
                self._evaluate_during_training(model)
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint(epoch, batch_in_epoch, self._patience_left)
            for cb in self.callbacks:
                cb(self, self.step)                        # tests simulate a crash here
            if self.step >= total or self._patience_left == 0:
                return True, last
        return False, True

    def _forward_backward(self, model: nn.Module, batch: dict, last_of_epoch: bool) -> bool:
        """Add one micro-batch's gradients; True when they complete an optimiser step.

        The last batch of an epoch always ends the accumulation (a partial one), so no
        gradients carry over into the next epoch."""
        cfg, acc = self.config, self.accelerator
        sync = (self._micro + 1) % cfg.grad_accum_steps == 0 or last_of_epoch
        # DDP: all-reduce gradients only on the micro-batch that ends an accumulation
        with acc.no_sync(model) if not sync else contextlib.nullcontext():
            with acc.autocast():  # forward in bf16/fp16 on CUDA; backward outside it
                loss = self.loss_fn(model, batch)
            acc.backward(loss / cfg.grad_accum_steps)
        # a tensor, not float(): reading it back would make the GPU wait every micro-batch
        self._running_loss = self._running_loss + loss.detach().float() / cfg.grad_accum_steps
        self._micro += 1
        self.history.examples_seen += _batch_size(batch) * acc.num_processes
        return sync

    def _optimizer_step(self, model: nn.Module) -> None:
        """Clip, step, advance the schedule, clear the gradients; then log the step."""
        cfg = self.config
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._log_step(lr)

    # -- setup and resume ---------------------------------------------------------------------
    def _prepare(self) -> tuple[nn.Module, Any, int]:
        """Seed, build loader, optimiser and schedule, and let Accelerate place them.

        Returns the model as Accelerate wrapped it (DDP under several processes), the loader
        and the number of optimiser steps the schedule spans."""
        from ktlab.config import seed_everything

        cfg = self.config
        seed_everything(cfg.seed)
        train_dl = self._loader(self.train_dataset, cfg.batch_size, shuffle=True)
        optimizer = self._user_optimizer or adamw(
            parameter_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        model, optimizer, train_dl = self.accelerator.prepare(self.model, optimizer, train_dl)
        total = self.total_steps(len(train_dl))
        self._wrapped, self.optimizer = model, optimizer
        self.scheduler = linear_warmup_decay(optimizer, int(cfg.warmup_ratio * total), total)
        self._running_loss, self._micro = 0.0, 0
        return model, train_dl, total

    def _resume(self, where: Optional[str | Path]) -> tuple[int, int]:
        """Where training starts: ``(epoch, batches of it already trained on)``. Resuming
        restores weights, optimiser, schedule, step, history, patience and RNG states."""
        self._patience_left = self.config.early_stopping_patience
        if where is None:
            return 0, 0
        state = self._load_checkpoint(where)
        self._patience_left = state["patience_left"]
        return state["epoch"], state["batch_in_epoch"]

    def _epochs_left(self, epoch: int) -> bool:
        """``epochs < 1`` with ``max_steps`` set means as many epochs as the steps need."""
        cfg = self.config
        return epoch < cfg.epochs or bool(cfg.max_steps and cfg.epochs < 1)

    def _epoch_batches(self, train_dl: Any, epoch: int, skip: int) -> Iterator[dict]:
        """This epoch's batches, in the sampler's ``(seed, epoch)`` order.

        Resumed mid-epoch, the first ``skip`` batches were trained on before the checkpoint:
        drop them (same order, so the same ones), then put the RNG states back where the
        checkpoint left them, since building the iterator may draw from them."""
        train_dl.set_epoch(epoch)
        batches = iter(train_dl)
        for _ in range(skip):
            next(batches)
        if skip:
            set_rng_state(self._resume_rng)
        return batches

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, dataset: Any) -> tuple[torch.Tensor, Optional[torch.Tensor], float]:
        """Logits and labels of every example (gathered from all processes) and the mean loss."""
        model = self._wrapped if self._wrapped is not None else self.model.to(self.device)
        model.eval()
        logits_all, labels_all, loss_sum, loss_n = [], [], 0.0, 0
        for batch in self._eval_loader(dataset):
            with self.accelerator.autocast():
                out = model(**model_inputs(model, batch))
            loss = _loss_of(out)
            if loss is not None:
                loss_sum += loss.float().item() * _batch_size(batch)
                loss_n += _batch_size(batch)
            logits, labels = self._gather(logits_of(out).float(), batch.get("labels"))
            logits_all.append(logits)
            if labels is not None:
                labels_all.append(labels)
        logits = pad_cat(logits_all, 0.0)
        labels = pad_cat(labels_all, -100) if labels_all else None
        return logits, labels, (loss_sum / loss_n if loss_n else float("nan"))

    def _gather(self, logits: torch.Tensor,
                labels: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One batch from every process, on the CPU (the padding of a short last batch is
        dropped by ``gather_for_metrics``)."""
        acc = self.accelerator
        if logits.ndim >= 3:  # token level [B, L, C]: processes padded to different L
            logits = acc.pad_across_processes(logits, dim=1, pad_index=0)
            if labels is not None:
                labels = acc.pad_across_processes(labels, dim=1, pad_index=-100)
        logits = acc.gather_for_metrics(logits).cpu()
        return logits, (None if labels is None else acc.gather_for_metrics(labels).cpu())

    def predict(self, dataset: Any) -> torch.Tensor:
        """Logits for every example, in dataset order ([N, C], or [N, L, C] padded with 0)."""
        return self._predict(dataset)[0]

    def evaluate(self, dataset: Any = None) -> dict:
        """``metric_fn(logits, labels)`` plus ``loss`` (when the batches carry labels)."""
        dataset = self.eval_dataset if dataset is None else dataset
        logits, labels, loss = self._predict(dataset)
        if labels is None:
            raise ValueError("the evaluation batches carry no 'labels'; use predict() instead")
        metrics = {k: float(v) for k, v in self.metric_fn(logits, labels).items()}
        if not math.isnan(loss):
            metrics.setdefault("loss", loss)
        return metrics

    def _unscored(self) -> bool:
        """A dev set exists and the current step has not been evaluated yet."""
        scored = self.history.eval_step and self.history.eval_step[-1] == self.step
        return self.eval_dataset is not None and not scored

    def _evaluate_during_training(self, model: nn.Module) -> None:
        self._evaluate_and_track()
        model.train()  # evaluation switched dropout off

    def _evaluate_and_track(self) -> None:
        """Score the dev set, record the metrics, and let the chosen one pick the best step."""
        name = self.config.metric_name
        metrics = self.evaluate(self.eval_dataset)
        if name not in metrics:
            raise KeyError(f"metric_name={name!r} is not among the eval metrics "
                           f"{sorted(metrics)}; set TrainConfig.metric_name to one of them")
        self.history.eval_step.append(self.step)
        self.history.eval_metrics.append(metrics)
        if self._writer:
            for key, value in metrics.items():
                self._writer.add_scalar(f"eval/{key}", value, self.step)
        self._track_best(metrics[name])

    # -- best model and early stopping --------------------------------------------------------
    def _track_best(self, value: float) -> None:
        """An improvement keeps these weights and refills the patience; anything else uses up
        one evaluation of it (early stopping when it reaches 0; None = never)."""
        cfg, best = self.config, self.history.best_metric
        improved = best is None or (value > best if cfg.greater_is_better else value < best)
        if improved:
            self.history.best_metric, self.history.best_step = value, self.step
            self._save_best()
            self._patience_left = cfg.early_stopping_patience
        elif self._patience_left is not None:
            self._patience_left -= 1

    def _save_best(self) -> None:
        """To ``output_dir/best.pt`` when there is one, else a CPU copy in memory."""
        state = self._unwrapped_state()
        if self.config.output_dir:
            path = Path(self.config.output_dir) / BEST_NAME
            if self.is_main_process:
                atomic_save({"model": state, "step": self.step,
                             "metric": self.history.best_metric}, path)
            self.history.best_checkpoint = str(path)
        else:
            self._best_state = state

    def _restore_best(self) -> None:
        if self.config.output_dir and self.history.best_checkpoint:
            self.accelerator.wait_for_everyone()  # rank 0 may still be writing it
            state = torch.load(self.history.best_checkpoint, map_location="cpu",
                               weights_only=False)["model"]
        else:
            state = self._best_state
        if state is not None:
            self._unwrapped().load_state_dict(state)

    # -- checkpoints --------------------------------------------------------------------------
    def _unwrapped(self) -> nn.Module:
        """The bare model (no DDP wrapper): its state_dict has the plain parameter names."""
        return self.accelerator.unwrap_model(
            self._wrapped if self._wrapped is not None else self.model)

    def _unwrapped_state(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self._unwrapped().state_dict().items()}

    def save_checkpoint(self, epoch: int, batch_in_epoch: int,
                        patience_left: Optional[int]) -> Optional[Path]:
        """Everything a resumed run needs, written atomically to ``output_dir/checkpoint.pt``."""
        if not self.config.output_dir:
            raise ValueError("save_every needs TrainConfig.output_dir (where to write)")
        path = Path(self.config.output_dir) / CHECKPOINT_NAME
        state = {"model": self._unwrapped_state(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "step": self.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                 "patience_left": patience_left, "history": self.history.to_dict(),
                 "best_state": self._best_state, "config": dataclasses.asdict(self.config)}
        if self.is_main_process:
            atomic_save(state, path)
        self.accelerator.wait_for_everyone()
        return path

    def _checkpoint_file(self, where: str | Path) -> Path:
        """``"latest"`` is ``output_dir/checkpoint.pt``; a folder means its ``checkpoint.pt``."""
        if str(where) == "latest":
            if not self.config.output_dir:
                raise ValueError("resume_from='latest' needs TrainConfig.output_dir")
            where = Path(self.config.output_dir)
        path = Path(where)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}; train with save_every=N and "
                                    "output_dir set to create one")
        return path

    def _load_checkpoint(self, where: str | Path) -> dict:
        """Put back what :meth:`save_checkpoint` wrote; the RNG states are also kept for
        :meth:`_epoch_batches`, which restores them again after skipping used batches."""
        state = torch.load(self._checkpoint_file(where), map_location="cpu", weights_only=False)
        self._unwrapped().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.history = History.from_dict(state["history"])
        self._best_state = state.get("best_state")
        self._resume_rng = state["rng"]
        set_rng_state(state["rng"])
        return state

    # -- logging ------------------------------------------------------------------------------
    def _open_logs(self, total: int) -> None:
        """A progress bar on the local main process; TensorBoard when asked for."""
        from tqdm.auto import tqdm

        show = self.config.progress and self.accelerator.is_local_main_process
        self._writer = self._tensorboard()
        self._bar = tqdm(total=total, initial=self.step, desc="train", disable=not show,
                         leave=False)

    def _log_step(self, lr: float) -> None:
        """The step's loss (mean over its micro-batches) to history, bar and TensorBoard."""
        # partial accumulation at epoch end: scale the logged loss back to one batch
        loss = float(self._running_loss) * self.config.grad_accum_steps / self._micro
        self._running_loss, self._micro = 0.0, 0
        self._bar.update(1)
        if self.step % self.config.log_every:
            return
        self.history.step.append(self.step)
        self.history.loss.append(loss)
        self.history.lr.append(lr)
        self._bar.set_postfix(loss=f"{loss:.4f}")
        if self._writer:
            self._writer.add_scalar("train/loss", loss, self.step)
            self._writer.add_scalar("train/lr", lr, self.step)

    def _tensorboard(self) -> Any:
        if not (self.config.log_tensorboard and self.is_main_process):
            return None
        from torch.utils.tensorboard import SummaryWriter
        logdir = Path(self.config.output_dir or "runs") / "tensorboard"
        return SummaryWriter(log_dir=str(logdir))

    def _finish(self) -> None:
        """Close TensorBoard, put the best weights back, write ``history.json``."""
        cfg = self.config
        if self._writer:
            self._writer.close()
        if cfg.load_best_at_end and self.history.best_step is not None:
            self._restore_best()
        self.accelerator.wait_for_everyone()
        if cfg.output_dir and self.is_main_process:
            self.history.save_json(Path(cfg.output_dir) / "history.json")


def _batch_size(batch: dict) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    return 0
