"""A linear-chain CRF layer, written out: the forward algorithm and Viterbi decoding.

A tagger's encoder gives *emission* scores ``e[t, y]`` (how much token ``t`` looks like tag
``y``). A CRF adds *transition* scores ``A[y', y]`` (how plausible tag ``y`` is after ``y'``),
plus start and end scores, and scores a whole tag sequence::

    score(y) = start[y_0] + sum_t e[t, y_t] + sum_{t>0} A[y_{t-1}, y_t] + end[y_T]

Training maximises ``log p(y | x) = score(y) - log Z``, where the forward algorithm computes
``log Z = logsumexp`` over all ``C^T`` sequences in ``O(T C^2)``. Decoding takes the best
sequence with Viterbi (the same recursion with ``max`` instead of ``logsumexp``). This is how
an LSTM-CRF (Lample et al. 2016) learns that ``I-PER`` never follows ``O``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags. Inputs are batch-first: emissions ``[B, T, C]``,
    tags ``[B, T]``, mask ``[B, T]`` (1 for real tokens; each row's real tokens come first)."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    def _check(self, emissions: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(f"emissions must be [batch, time, {self.num_tags}], "
                             f"got {tuple(emissions.shape)}")
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        mask = mask.bool()
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match emissions "
                             f"{tuple(emissions.shape[:2])}")
        if not mask[:, 0].all():
            raise ValueError("every sequence needs at least one real token at position 0")
        return mask

    def score(self, emissions: torch.Tensor, tags: torch.Tensor,
              mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``score(y)`` of the given tag sequences, one number per batch row."""
        mask = self._check(emissions, mask)
        tags = tags.clamp(min=0)  # positions outside the mask may hold -100
        batch = torch.arange(emissions.shape[0], device=emissions.device)
        total = self.start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            total = total + step * mask[:, t]
        last = tags[batch, mask.sum(1) - 1]
        return total + self.end[last]

    def log_partition(self, emissions: torch.Tensor,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log Z`` by the forward algorithm: ``alpha_t[y] = logsumexp_{y'}(alpha_{t-1}[y'] +
        A[y', y]) + e[t, y]``."""
        mask = self._check(emissions, mask)
        alpha = self.start + emissions[:, 0]                              # [B, C]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor,
                           mask: Optional[torch.Tensor] = None,
                           reduction: str = "mean") -> torch.Tensor:
        """``-log p(tags | x)``: the training loss."""
        nll = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        if reduction == "none":
            return nll
        return nll.mean() if reduction == "mean" else nll.sum()

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.neg_log_likelihood(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor,
               mask: Optional[torch.Tensor] = None) -> list[list[int]]:
        """Viterbi: the highest-scoring tag sequence for each row (lists of real-token length)."""
        mask = self._check(emissions, mask)
        delta = self.start + emissions[:, 0]
        backpointers = []
        for t in range(1, emissions.shape[1]):
            scores = delta.unsqueeze(2) + self.transitions                 # [B, prev, next]
            best, arg = scores.max(dim=1)
            backpointers.append(arg)
            delta = torch.where(mask[:, t, None], best + emissions[:, t], delta)
        delta = delta + self.end
        lengths = mask.sum(1).tolist()
        paths = []
        for b, length in enumerate(lengths):
            tag = int(delta[b].argmax())
            path = [tag]
            for t in range(length - 1, 0, -1):
                tag = int(backpointers[t - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths


def transition_constraints(labels: Sequence[str]) -> torch.Tensor:
    """``[C, C]`` boolean matrix of IOB2-legal transitions (``I-X`` only after ``B-X``/``I-X``).
    Adding ``-1e4`` where it is false to ``CRF.transitions`` forbids invalid sequences."""
    allowed = torch.ones(len(labels), len(labels), dtype=torch.bool)
    for j, nxt in enumerate(labels):
        if nxt.startswith("I-"):
            for i, prev in enumerate(labels):
                allowed[i, j] = prev[2:] == nxt[2:] and prev[:2] in ("B-", "I-")
    return allowed
