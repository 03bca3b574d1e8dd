"""Robustness: perturbed dev sets and adversarial training on the embeddings (FGM).

Two questions from notebook 09:

1. **How brittle is each model?** We perturb the *real* SST-2 dev sentences three ways and
   measure the accuracy drop:

   * ``typo`` - a character-level edit (swap two neighbours, delete a letter, insert or replace
     one by a QWERTY neighbour) in words of four letters or more, each with probability ``p``;
   * ``swap`` - a word replaced by another word of the same part of speech (the CoNLL-2003 POS
     lookup of :mod:`ktlab.augment`), each with probability ``p``;
   * ``drop`` - each word deleted with probability ``p`` (at least one word is kept).

   Every sentence that *can* change gets at least one edit (we redraw up to a few times), so the
   drop is measured on sentences that really differ. The sets are deterministic in ``seed``.

2. **Does adversarial training narrow the drop?** FGM (Miyato et al. 2017, "Adversarial Training
   Methods for Semi-Supervised Text Classification") perturbs the word embeddings ``e`` in the
   direction that increases the loss most, to first order:

       r_adv = ε · g / ‖g‖₂,   g = ∇_e L(e)        (one norm per sentence)

   and trains on ``L(e) + L(e + r_adv)``. :func:`fgm_loss` wraps any ``loss_fn(model, batch)`` of
   :mod:`ktlab.experiments.classify` so the same trainer, recipe and budget run with and without it.
"""
from __future__ import annotations

import random
import string
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

if TYPE_CHECKING:  # torch is imported lazily: `import ktlab` stays light
    import torch

    from ktlab.augment import WordLookup

PERTURBATIONS = ("typo", "swap", "drop")
_TYPO_OPS = ("swap", "delete", "insert", "replace")
_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
#: letter -> the letters beside it on a QWERTY keyboard (same row), the usual slip of a finger
QWERTY_NEIGHBOURS = {row[i]: row[max(0, i - 1):i] + row[i + 1:i + 2]
                     for row in _QWERTY_ROWS for i in range(len(row))}
_MAX_REDRAWS = 5


# ----------------------------------------------------------------------------- perturbations

def typo(word: str, rng: random.Random) -> str:
    """One character edit inside ``word``, the first letter kept (as most human typos do).
    Words shorter than four letters or not alphabetic come back unchanged: "a" -> "s" would be a
    different word, not a typo."""
    if len(word) < 4 or not word.isalpha():
        return word
    op = rng.choice(_TYPO_OPS)
    i = rng.randrange(1, len(word) - 1) if op == "swap" else rng.randrange(1, len(word))
    near = QWERTY_NEIGHBOURS.get(word[i].lower()) or string.ascii_lowercase
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "delete":
        return word[:i] + word[i + 1:]
    if op == "insert":
        return word[:i] + rng.choice(near) + word[i:]
    return word[:i] + rng.choice(near) + word[i + 1:]


def typo_sentence(sentence: str, p: float, rng: random.Random) -> str:
    """Each word gets a :func:`typo` with probability ``p``."""
    return " ".join(typo(w, rng) if rng.random() < p else w for w in sentence.split())


def swap_sentence(sentence: str, p: float, rng: random.Random, lookup: "WordLookup") -> str:
    """Each word is replaced, with probability ``p``, by a same-POS word (:mod:`ktlab.augment`)."""
    from ktlab.augment import swap_words
    return " ".join(swap_words(sentence.split(), p, rng, lookup))


def drop_words(sentence: str, p: float, rng: random.Random) -> str:
    """Each word is deleted with probability ``p``; one random word survives an all-drop."""
    words = sentence.split()
    kept = [w for w in words if rng.random() >= p]
    if not kept and words:
        kept = [rng.choice(words)]
    return " ".join(kept)


def perturb_dev(sentences: Sequence[str], kind: str, p: float = 0.15, seed: int = 0,
                lookup: Optional["WordLookup"] = None) -> list[str]:
    """A perturbed copy of ``sentences`` (same order, same length).

    Sentence ``i`` draws from its own ``Random(seed, i)`` so one sentence's edit does not depend
    on the others (adding sentences leaves the earlier ones unchanged)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {PERTURBATIONS}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be a probability in (0, 1], got {p}")
    if kind == "swap" and lookup is None:
        raise ValueError("kind='swap' needs a POS lookup: "
                         "ktlab.augment.build_pos_lookup(ktlab.data.load_conll('train'))")
    edit: Callable[[str, random.Random], str] = {
        "typo": lambda s, r: typo_sentence(s, p, r),
        "swap": lambda s, r: swap_sentence(s, p, r, lookup),  # type: ignore[arg-type]
        "drop": lambda s, r: drop_words(s, p, r),
    }[kind]
    out = []
    for i, sentence in enumerate(sentences):
        rng = random.Random(f"{seed}:{kind}:{i}")
        new = sentence
        for _ in range(_MAX_REDRAWS):     # redraw until the sentence differs (if it can)
            new = edit(sentence, rng)
            if new != sentence:
                break
        out.append(new)
    return out


def changed_fraction(original: Sequence[str], perturbed: Sequence[str]) -> float:
    """Share of sentences the perturbation actually changed."""
    if len(original) != len(perturbed):
        raise ValueError(f"{len(original)} original but {len(perturbed)} perturbed sentences")
    return sum(a != b for a, b in zip(original, perturbed)) / max(len(original), 1)


# ----------------------------------------------------------------------------- FGM

def fgm_perturbation(embeddings: "torch.Tensor", grad: "torch.Tensor",
                     epsilon: float) -> "torch.Tensor":
    """r = ε·g/‖g‖₂ with one norm per example (over every dimension but the batch); zero where
    the gradient is zero. ``embeddings`` only fixes the shape: FGM's step does not depend on e."""
    import torch
    if grad.shape != embeddings.shape:
        raise ValueError(f"grad {tuple(grad.shape)} and embeddings {tuple(embeddings.shape)} "
                         "must have the same shape")
    norm = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.dim() - 1)))
    return torch.where(norm > 0, epsilon * grad / norm.clamp(min=1e-30), torch.zeros_like(grad))


def word_embedding_module(model: "torch.nn.Module") -> "torch.nn.Module":
    """The module whose output is the word-embedding sequence: ``get_input_embeddings()`` for
    the teacher, ``.embedding`` for the BiLSTM/CNN students."""
    if hasattr(model, "get_input_embeddings"):
        module = model.get_input_embeddings()
        if module is not None:
            return module
    if hasattr(model, "embedding"):
        return model.embedding
    raise TypeError(f"{type(model).__name__} has neither get_input_embeddings() nor .embedding; "
                    "pass the embedding module as fgm_loss(..., layer=...)")


def fgm_loss(base_loss: Callable[[Any, dict], "torch.Tensor"], epsilon: float = 1.0,
             layer: Optional[Callable[[Any], "torch.nn.Module"]] = None
             ) -> Callable[[Any, dict], "torch.Tensor"]:
    """Wrap ``base_loss(model, batch)`` into FGM adversarial training: clean + adversarial loss.

    How: a forward hook adds a perturbation ``delta`` to the embedding module's output. Pass 1
    adds a zero ``delta`` that requires grad, so ``∂L/∂delta`` is the gradient w.r.t. the
    embeddings ``g`` (even when the embedding weights are frozen). Pass 2 adds the detached
    ``r_adv = fgm_perturbation(g)``. The returned sum backpropagates through both passes, as in
    Miyato et al. (their adversarial term is a regulariser on the same parameters)."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    find = layer or word_embedding_module

    def loss_fn(model: Any, batch: dict) -> "torch.Tensor":
        import torch
        module = find(model)
        state: dict[str, Any] = {"delta": None}

        def add_delta(_module: Any, _inputs: Any, output: "torch.Tensor") -> "torch.Tensor":
            if state["delta"] is None:            # pass 1: a zero we can differentiate by
                state["delta"] = torch.zeros_like(output, requires_grad=True)
            return output + state["delta"]

        handle = module.register_forward_hook(add_delta)
        try:
            clean = base_loss(model, batch)
            if not clean.requires_grad:           # evaluation (no_grad): no adversarial term
                return clean
            (grad,) = torch.autograd.grad(clean, state["delta"], retain_graph=True)
            state["delta"] = fgm_perturbation(grad, grad, epsilon).detach()
            adversarial = base_loss(model, batch)
        finally:
            handle.remove()
        return clean + adversarial

    loss_fn.__name__ = f"fgm_{getattr(base_loss, '__name__', 'loss')}"
    return loss_fn
