"""Knowledge distillation: losses that make a student imitate a teacher.

* :func:`kd_loss` - Hinton et al. 2015: KL between teacher and student distributions softened by
  a temperature T, multiplied by T**2 so its gradients keep their size as T grows.
* :func:`logit_mse` - Tang et al. 2019 ("Distilling task-specific knowledge from BERT into simple
  neural networks"): mean squared error between raw logits.
* :func:`hard_soft_loss` - the usual mix of the label loss and the distillation loss.
* :func:`hidden_mse`, :func:`attention_kl`, :func:`cosine_embedding` - intermediate-layer losses
  (TinyBERT, MiniLM, DistilBERT).
* :class:`TeacherCache` - run the teacher once per example, not once per student epoch.
* :class:`Distiller` - a loss configured by a list of matches
  ``{teacher_layer, student_layer, feature, loss, weight}`` (the TextBrewer idea).

Every logit loss accepts sequence-level logits ``[B, C]`` and token-level logits ``[B, L, C]``;
for the latter pass ``labels`` ``[B, L]`` (positions labelled -100 are ignored) or a boolean
``mask`` ``[B, L]``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------- logit losses

def _check_pair(student: torch.Tensor, teacher: torch.Tensor, what: str = "logits") -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student {what} {tuple(student.shape)} and teacher {what} "
                         f"{tuple(teacher.shape)} differ in shape; both models must predict the "
                         "same label set over the same (padded) positions")


def _select(student: torch.Tensor, teacher: torch.Tensor, labels: Optional[torch.Tensor],
            mask: Optional[torch.Tensor], ignore_index: int
            ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Flatten to ``[N, C]`` rows and keep the rows that count (labels != ignore_index & mask)."""
    _check_pair(student, teacher)
    lead = student.shape[:-1]
    keep = torch.ones(lead, dtype=torch.bool, device=student.device)
    if labels is not None:
        if labels.shape != lead:
            raise ValueError(f"labels {tuple(labels.shape)} do not match logits "
                             f"{tuple(student.shape)}: expected labels of shape {tuple(lead)}")
        keep &= labels != ignore_index
    if mask is not None:
        if mask.shape != lead:
            raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(lead)}")
        keep &= mask.bool()
    flat_labels = labels.reshape(-1)[keep.reshape(-1)] if labels is not None else None
    c = student.shape[-1]
    return (student.reshape(-1, c)[keep.reshape(-1)], teacher.reshape(-1, c)[keep.reshape(-1)],
            flat_labels)


def soften(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(z / T): T > 1 spreads probability over the 'dark knowledge' of wrong classes."""
    _check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 2.0, *, labels: Optional[torch.Tensor] = None,
            mask: Optional[torch.Tensor] = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""Soft-target distillation loss :math:`T^2\,\mathrm{KL}(p_T^{(T)} \,\|\, p_S^{(T)})`.

    Averaged over examples (or over the kept token positions). Why ``T**2``: the gradient of the
    softened KL w.r.t. the student logits is ``(p_S - p_T) / T`` and for large T that difference
    itself shrinks like ``1/T``, so without the factor the soft term would vanish as T grows
    (Hinton et al. 2015, section 2). ``labels``/``mask`` only select positions; the labels'
    values are not used here. The teacher is treated as a constant (no gradient flows to it).
    """
    _check_temperature(temperature)
    s, t, _ = _select(student_logits, teacher_logits, labels, mask, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(s.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(t.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
              labels: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean squared error between raw logits (Tang et al. 2019), averaged over kept positions
    and classes. Matching logits rather than probabilities keeps the teacher's scale."""
    s, t, _ = _select(student_logits, teacher_logits, labels, mask, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.mse_loss(s.float(), t.detach().float())


def hard_soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor, alpha: float = 0.5, temperature: float = 2.0, *,
                   soft: str = "kl", ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""``alpha * soft + (1 - alpha) * hard``.

    ``alpha`` is the weight of the *soft* (teacher) term: ``alpha=1`` is pure distillation,
    ``alpha=0`` ordinary training on the labels. ``soft="kl"`` uses :func:`kd_loss` at
    ``temperature``; ``soft="mse"`` uses :func:`logit_mse` (temperature unused). The hard term is
    cross-entropy with ``ignore_index`` (token-level labels -100 are skipped by both terms).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if soft not in ("kl", "mse"):
        raise ValueError(f"soft must be 'kl' or 'mse', got {soft!r}")
    s, t, flat_labels = _select(student_logits, teacher_logits, labels, None, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    hard = F.cross_entropy(s.float(), flat_labels.long())
    soft_term = kd_loss(s, t, temperature) if soft == "kl" else logit_mse(s, t)
    return alpha * soft_term + (1.0 - alpha) * hard


# ----------------------------------------------------------------------------- feature losses

def _lead_mask(mask: Optional[torch.Tensor], shape: torch.Size, device: torch.device
               ) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if mask.shape != shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match positions {tuple(shape)}")
    return mask.bool()


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               projection: Optional[nn.Module] = None,
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between hidden states ``[B, L, H]`` (TinyBERT). When the widths differ, a learned
    ``projection`` (e.g. ``nn.Linear(H_student, H_teacher)``) maps the student into the teacher's
    space; ``mask`` ``[B, L]`` (the attention mask) drops padding positions."""
    if projection is not None:
        student_hidden = projection(student_hidden)
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(f"hidden widths differ (student {student_hidden.shape[-1]}, teacher "
                         f"{teacher_hidden.shape[-1]}): pass projection=nn.Linear("
                         f"{student_hidden.shape[-1]}, {teacher_hidden.shape[-1]})")
    _check_pair(student_hidden, teacher_hidden, "hidden states")
    keep = _lead_mask(mask, student_hidden.shape[:-1], student_hidden.device)
    s, t = student_hidden[keep], teacher_hidden.detach()[keep]
    if s.numel() == 0:
        return student_hidden.sum() * 0.0
    return F.mse_loss(s.float(), t.float())


def cosine_embedding(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                     projection: Optional[nn.Module] = None,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``1 - cos(h_S, h_T)`` averaged over positions (DistilBERT's cosine embedding loss): it
    aligns the *directions* of the hidden states and ignores their scale."""
    if projection is not None:
        student_hidden = projection(student_hidden)
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden states differ: student {tuple(student_hidden.shape)}, teacher "
                         f"{tuple(teacher_hidden.shape)}; pass a projection for a width mismatch")
    keep = _lead_mask(mask, student_hidden.shape[:-1], student_hidden.device)
    s, t = student_hidden[keep], teacher_hidden.detach()[keep]
    if s.numel() == 0:
        return student_hidden.sum() * 0.0
    return (1.0 - F.cosine_similarity(s.float(), t.float(), dim=-1)).mean()


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                 attention_mask: Optional[torch.Tensor] = None, eps: float = 1e-12) -> torch.Tensor:
    """KL(teacher || student) between attention distributions ``[B, heads, L, L]`` (MiniLM's
    self-attention distillation), averaged over heads and real query positions. When head
    counts differ, both sides are first averaged over heads."""
    if student_attn.ndim != 4 or teacher_attn.ndim != 4:
        raise ValueError("attention maps must be [batch, heads, query, key]; got "
                         f"{tuple(student_attn.shape)} and {tuple(teacher_attn.shape)}")
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn = student_attn.mean(1, keepdim=True)
        teacher_attn = teacher_attn.mean(1, keepdim=True)
    _check_pair(student_attn, teacher_attn, "attention maps")
    t = teacher_attn.detach().float()
    kl = (t * (torch.log(t + eps) - torch.log(student_attn.float() + eps))).sum(-1)  # [B,H,Lq]
    keep = _lead_mask(attention_mask, student_attn.shape[:1] + student_attn.shape[2:3],
                      student_attn.device)
    keep = keep[:, None, :].expand_as(kl)
    return kl[keep].mean() if keep.any() else student_attn.sum() * 0.0


# ----------------------------------------------------------------------------- teacher caching

def _example_key(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> bytes:
    ids = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
    return hashlib.sha1(ids.cpu().numpy().tobytes()).digest()


class TeacherCache:
    """Run the teacher at most once per distinct example, however many epochs the student trains.

    Call it with a padded batch; it returns the teacher's outputs for the batch (``logits``,
    and ``hidden_states``/``attentions`` if asked for), computing only the examples it has not
    seen. ``teacher_calls`` counts examples actually sent through the teacher."""

    def __init__(self, teacher: nn.Module, hidden_states: bool = False,
                 attentions: bool = False) -> None:
        self.teacher, self.hidden_states, self.attentions = teacher, hidden_states, attentions
        self.store: dict[bytes, dict[str, Any]] = {}
        self.teacher_calls = 0
        self._flags = _output_flags(teacher, hidden_states=hidden_states, attentions=attentions)

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        keys = [_example_key(ids[i], mask[i]) for i in range(ids.shape[0])]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            self._compute(batch, missing, keys)
        length = ids.shape[1]
        out: dict[str, Any] = {"logits": _stack_padded([self.store[k]["logits"] for k in keys],
                                                       length)}
        for name in ("hidden_states", "attentions"):
            if getattr(self, name):
                layers = len(self.store[keys[0]][name])
                out[name] = tuple(_stack_padded([self.store[k][name][j] for k in keys], length)
                                  for j in range(layers))
        return out

    def _compute(self, batch: Mapping[str, torch.Tensor], rows: list[int], keys: list) -> None:
        from ktlab.train import logits_of, model_inputs
        teacher = self.teacher
        was_training = teacher.training
        teacher.eval()
        device = next(teacher.parameters()).device
        sub = {k: batch[k][rows].to(device) for k in ("input_ids", "attention_mask",
                                                     "token_type_ids") if k in batch}
        out = teacher(**model_inputs(teacher, sub), **self._flags)
        self.teacher_calls += len(rows)
        logits = logits_of(out)
        hidden = _output_field(out, "hidden_states") if self.hidden_states else None
        attentions = _output_field(out, "attentions") if self.attentions else None
        mask = sub.get("attention_mask", torch.ones_like(sub["input_ids"]))
        for j, i in enumerate(rows):
            n = int(mask[j].sum())  # keep only the real tokens (padding is batch-dependent)
            entry = {"logits": _trim(logits[j], n)}
            if hidden is not None:
                entry["hidden_states"] = [h[j, :n].cpu() for h in hidden]
            if attentions is not None:
                entry["attentions"] = [a[j, :, :n, :n].cpu() for a in attentions]
            self.store[keys[i]] = entry
        teacher.train(was_training)


def _accepts_keyword(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes ``name``: as a named input, or through ``**kwargs``
    (Hugging Face models take ``output_hidden_states`` that way)."""
    import inspect

    from ktlab.train import model_inputs
    if model_inputs(model, {name: True}):
        return True
    forward = getattr(model, "module", model).forward
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in inspect.signature(forward).parameters.values())


def _output_flags(teacher: nn.Module, *, hidden_states: bool, attentions: bool) -> dict[str, bool]:
    """The ``output_*`` keywords to pass: only those asked for, so a teacher without them (a
    :class:`~ktlab.nn.students.BiLSTMClassifier`, a custom head) can still give its logits."""
    flags = {name: True for name, wanted in (("output_hidden_states", hidden_states),
                                             ("output_attentions", attentions)) if wanted}
    refused = [name for name in flags if not _accepts_keyword(teacher, name)]
    if refused:
        raise TypeError(f"{type(teacher).__name__}.forward does not take {', '.join(refused)}; "
                        "cache only its logits (TeacherCache(teacher)) or use a teacher that "
                        "returns hidden states/attentions")
    return flags


def _output_field(out: Any, name: str) -> Sequence[torch.Tensor]:
    """``out.hidden_states``/``out.attentions``, or a clear error when the teacher returned none
    (a model that swallows unknown keywords; sdpa attention, which returns an empty tuple)."""
    value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
    if not value or any(v is None for v in value):
        hint = (" (load it with load_teacher(..., attentions=True): sdpa returns no weights)"
                if name == "attentions" else "")
        raise ValueError(f"the teacher ({type(out).__name__} output) returned no {name}{hint}")
    return value


def _trim(logits: torch.Tensor, n: int) -> torch.Tensor:
    return (logits[:n] if logits.ndim == 2 else logits).detach().cpu()


def _stack_padded(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-example tensors, zero-padding every token dimension up to ``length``."""
    if tensors[0].ndim == 1:  # sequence-level logits [C]
        return torch.stack(list(tensors))
    padded = []
    for t in tensors:
        pads = []
        for dim in reversed(range(t.ndim)):
            is_token_dim = (t.ndim == 2 and dim == 0) or (t.ndim == 3 and dim in (1, 2))
            pads += [0, length - t.shape[dim]] if is_token_dim else [0, 0]
        padded.append(F.pad(t, pads))
    return torch.stack(padded)


def cache_teacher_logits(teacher: nn.Module, dataset: Sequence[dict], collate_fn: Callable,
                         batch_size: int = 64, key: str = "teacher_logits") -> list[dict]:
    """A copy of ``dataset`` whose items carry the teacher's logits under ``key`` (``[C]`` or
    ``[L_i, C]``): one teacher pass before training, then every epoch reads the cache.
    Collate it with :class:`PadTeacherCollator` when logits are token-level."""
    cache = TeacherCache(teacher)
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dict(dataset[i]) for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate_fn([{k: v for k, v in it.items() if k != key} for it in items])
        logits = cache(batch)["logits"]
        for j, item in enumerate(items):
            n = len(item["input_ids"])
            item[key] = logits[j, :n].clone() if logits.ndim == 3 else logits[j].clone()
            out.append(item)
    return out


@dataclasses.dataclass
class PadTeacherCollator:
    """Wraps a collator: pads per-example ``[L_i, ...]`` tensors in ``keys`` to the batch length
    (zeros), so token-level cached teacher logits batch like the inputs."""

    base: Callable
    keys: tuple[str, ...] = ("teacher_logits",)

    def __call__(self, items: list[dict]) -> dict:
        held = {k: [it[k] for it in items] for k in self.keys if k in items[0]}
        batch = self.base([{k: v for k, v in it.items() if k not in held} for it in items])
        length = batch["input_ids"].shape[1]
        for k, values in held.items():
            batch[k] = _stack_padded([torch.as_tensor(v) for v in values], length)
        return batch


# ----------------------------------------------------------------------------- the Distiller

FEATURES = ("logits", "hidden", "attention")
LOSSES = {"logits": ("kl", "mse"), "hidden": ("mse", "cosine"), "attention": ("kl",)}


@dataclasses.dataclass
class Match:
    """One term of the distillation objective (TextBrewer's ``intermediate_matches`` idea).

    ``feature``: ``"logits"``, ``"hidden"`` (layer 0 = embeddings, ``i`` = output of layer i,
    negatives count from the top) or ``"attention"`` (layers counted from 1).
    ``loss``: logits -> ``"kl"``/``"mse"``; hidden -> ``"mse"``/``"cosine"``; attention -> ``"kl"``.
    """

    feature: str = "logits"
    loss: str = "kl"
    weight: float = 1.0
    teacher_layer: Optional[int] = None
    student_layer: Optional[int] = None
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"unknown feature {self.feature!r}; choose one of {FEATURES}")
        if self.loss not in LOSSES[self.feature]:
            raise ValueError(f"loss {self.loss!r} does not apply to feature {self.feature!r}; "
                             f"choose one of {LOSSES[self.feature]}")
        if self.feature != "logits" and (self.teacher_layer is None or self.student_layer is None):
            raise ValueError(f"a {self.feature!r} match needs teacher_layer and student_layer")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")


class DistillerOutput(dict):
    """``loss``, the student's ``logits`` and each term (``terms``) - a dict with attributes."""

    __getattr__ = dict.get


class Distiller(nn.Module):
    """Student + teacher + a list of matches -> one trainable module.

    ``Trainer(Distiller(student, teacher, matches), cfg, data)`` trains the student and the
    width projections (created for hidden matches whose widths differ); the teacher is held
    outside the module's parameters, never trained, and reached through a :class:`TeacherCache`
    so it runs once per example. ``hard_weight`` adds cross-entropy on the labels. Works for
    sequence classification (``[B, C]`` logits) and token classification (``[B, L, C]``, label
    -100 positions ignored).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module,
                 matches: Sequence[Match | Mapping[str, Any]], hard_weight: float = 0.0,
                 cache: bool = True) -> None:
        super().__init__()
        matches = [m if isinstance(m, Match) else Match(**m) for m in matches]
        if not matches:
            raise ValueError("matches is empty: give at least one, e.g. "
                             "[{'feature': 'logits', 'loss': 'kl', 'weight': 1.0}]")
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a sub-module: never trained or saved
        self.matches, self.hard_weight = matches, hard_weight
        self._needs_hidden = any(m.feature == "hidden" for m in matches)
        self._needs_attn = any(m.feature == "attention" for m in matches)
        self.cache = TeacherCache(teacher, self._needs_hidden, self._needs_attn) if cache else None
        self.projections = nn.ModuleDict()
        s_cfg, t_cfg = getattr(student, "config", None), getattr(teacher, "config", None)
        for i, m in enumerate(matches):
            if m.feature == "logits":
                continue
            s_layers, t_layers = _num_layers(student), _num_layers(teacher)
            lo = 0 if m.feature == "hidden" else 1
            _check_layer(m.student_layer, s_layers, lo, "student")
            _check_layer(m.teacher_layer, t_layers, lo, "teacher")
            if m.feature == "hidden" and s_cfg.hidden_size != t_cfg.hidden_size:
                self.projections[str(i)] = nn.Linear(s_cfg.hidden_size, t_cfg.hidden_size)
        if self._needs_attn:
            for name, model in (("student", student), ("teacher", teacher)):
                impl = getattr(model.config, "_attn_implementation", "eager")
                if impl not in (None, "eager"):
                    raise ValueError(f"attention matches need the {name} loaded with "
                                     f"attn_implementation='eager' (it uses {impl!r}, which "
                                     "returns no attention weights)")

    def teacher_outputs(self, batch: Mapping[str, torch.Tensor]) -> dict:
        if "teacher_logits" in batch and not (self._needs_hidden or self._needs_attn):
            return {"logits": batch["teacher_logits"]}
        if self.cache is not None:
            out = self.cache(batch)
        else:
            with torch.no_grad():
                self.teacher.eval()
                res = self.teacher(**{k: batch[k] for k in ("input_ids", "attention_mask",
                                                             "token_type_ids") if k in batch},
                                   output_hidden_states=self._needs_hidden,
                                   output_attentions=self._needs_attn)
            out = {"logits": res.logits, "hidden_states": res.hidden_states,
                   "attentions": res.attentions}
        device = batch["input_ids"].device
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else
                    tuple(x.to(device) for x in v) if v is not None else None)
                for k, v in out.items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None,
                teacher_logits: Optional[torch.Tensor] = None) -> DistillerOutput:
        """``teacher_logits`` (cached, e.g. by :func:`cache_teacher_logits`) replace a teacher
        call when only logits are matched."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        s_out = self.student(**kwargs, output_hidden_states=self._needs_hidden,
                             output_attentions=self._needs_attn)
        logits = s_out.logits
        if not self.training:  # evaluation: the student alone, judged on the labels
            loss = None if labels is None else F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                ignore_index=IGNORE_INDEX)
            return DistillerOutput(loss=loss, logits=logits, terms={})
        extra = {} if teacher_logits is None else {"teacher_logits": teacher_logits}
        t_out = self.teacher_outputs({**kwargs, **extra})
        token_mask = mask.bool() if logits.ndim == 3 else None
        if token_mask is not None and labels is not None:
            token_mask = token_mask & (labels != IGNORE_INDEX)
        terms = {}
        for i, m in enumerate(self.matches):
            name = f"{i}:{m.feature}/{m.loss}"
            if m.feature == "logits":
                terms[name] = (kd_loss(logits, t_out["logits"], m.temperature, mask=token_mask)
                               if m.loss == "kl" else
                               logit_mse(logits, t_out["logits"], mask=token_mask))
            elif m.feature == "hidden":
                s_h = s_out.hidden_states[m.student_layer]
                t_h = t_out["hidden_states"][m.teacher_layer]
                proj = self.projections[str(i)] if str(i) in self.projections else None
                loss_fn = hidden_mse if m.loss == "mse" else cosine_embedding
                terms[name] = loss_fn(s_h, t_h, proj, mask=mask.bool())
            else:
                s_a = s_out.attentions[_attn_index(m.student_layer)]
                t_a = t_out["attentions"][_attn_index(m.teacher_layer)]
                terms[name] = attention_kl(s_a, t_a, mask)
        loss = sum(m.weight * terms[n] for m, n in zip(self.matches, terms))
        if self.hard_weight and labels is not None:
            hard = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
            terms["hard/ce"] = hard
            loss = loss + self.hard_weight * hard
        return DistillerOutput(loss=loss, logits=logits, terms={k: float(v.detach()) for k, v in
                                                                 terms.items()})


def _num_layers(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None)
    if n is None:
        raise ValueError(f"cannot tell how many layers a {type(model).__name__} has: layer "
                         "matches need a Hugging Face-style config.num_hidden_layers")
    return int(n)


def _check_layer(layer: int, n_layers: int, lo: int, who: str) -> None:
    valid = range(-n_layers, n_layers + 1) if lo == 0 else [*range(-n_layers, 0),
                                                           *range(1, n_layers + 1)]
    if layer not in valid:
        raise IndexError(f"{who} layer {layer} does not exist: the {who} has {n_layers} layers "
                         f"(hidden: 0 = embeddings .. {n_layers}; attention: 1 .. {n_layers}; "
                         "negatives count from the top)")


def _attn_index(layer: int) -> int:
    return layer - 1 if layer > 0 else layer
