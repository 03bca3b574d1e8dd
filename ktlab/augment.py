"""Data augmentation for distillation (Tang et al. 2019, section 3.3): a bigger *transfer set*.

A small student learns more from the teacher when it sees the teacher's soft labels on many more
sentences than the labelled training set holds. The labels of augmented sentences come from the
teacher, so the edits may change the sentiment ("good" -> "bad"): the teacher says what it became.

Three word-level operations, applied to whitespace-split words:

* **masking** - each word becomes ``[MASK]`` with probability ``p_mask`` (the teacher's WordPiece
  knows ``[MASK]``; the student learns what a missing word contributes);
* **swapping** - each word (not already masked) is replaced, with probability ``p_swap``, by a word
  of the same part of speech (``swap="pos"``, tags from CoNLL-2003, a real tagged corpus) or a word
  seen in sentences of the same class (``swap="class"``), drawn by corpus frequency;
* **n-gram sampling** - with probability ``p_ngram`` only a random n-gram (``n`` in ``ngram_range``)
  of the result is kept.

Each training sentence yields up to ``n_samples`` new, distinct sentences (originals excluded).
"""
from __future__ import annotations

import collections
import dataclasses
import random
from typing import Iterable, Optional, Sequence

SWAP_MODES = ("pos", "class", "none")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Tang et al. used p_mask = p_swap = 0.1, p_ngram = 0.25, n in 1..5 and 20 samples/sentence."""

    p_mask: float = 0.1
    p_swap: float = 0.1
    p_ngram: float = 0.25
    ngram_range: tuple[int, int] = (1, 5)
    n_samples: int = 1
    swap: str = "pos"
    mask_token: str = "[MASK]"

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_swap", "p_ngram"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.p_mask + self.p_swap > 1.0:
            raise ValueError(f"p_mask + p_swap must be <= 1 (got {self.p_mask + self.p_swap})")
        if self.swap not in SWAP_MODES:
            raise ValueError(f"unknown swap mode {self.swap!r}; choose one of {SWAP_MODES}")
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must be (min, max) with 1 <= min <= max, got "
                             f"{self.ngram_range}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")


class WordLookup:
    """Word -> group (a POS tag or a class) and group -> words weighted by frequency.

    ``replacement(word, rng)`` draws another word of the word's group, or returns ``None`` when
    the word is unknown or alone in its group (the caller then keeps the word)."""

    def __init__(self, counts: dict[str, collections.Counter]):
        # each word belongs to the group where it is most frequent
        best: dict[str, tuple[int, str]] = {}
        for group, counter in counts.items():
            for word, n in counter.items():
                if word not in best or n > best[word][0]:
                    best[word] = (n, group)
        self.group_of = {w: g for w, (_, g) in best.items()}
        self._words: dict[str, list[str]] = {}
        self._cum: dict[str, list[int]] = {}
        for group, counter in counts.items():
            words = sorted(w for w in counter if self.group_of.get(w) == group)
            total, cum = 0, []
            for w in words:
                total += counter[w]
                cum.append(total)
            self._words[group], self._cum[group] = words, cum

    def __len__(self) -> int:
        return len(self.group_of)

    def groups(self) -> list[str]:
        return sorted(g for g, ws in self._words.items() if ws)

    def words(self, group: str) -> list[str]:
        return list(self._words.get(group, []))

    def replacement(self, word: str, rng: random.Random, group: Optional[str] = None
                    ) -> Optional[str]:
        group = group if group is not None else self.group_of.get(word.lower())
        words = self._words.get(group or "", [])
        if len(words) < 2:
            return None
        for _ in range(4):  # a few tries to draw a different word
            choice = rng.choices(words, cum_weights=self._cum[group])[0]
            if choice != word.lower():
                return choice
        return None

    def coverage(self, sentences: Iterable[str]) -> float:
        """Share of word tokens in ``sentences`` that the lookup can swap."""
        seen = known = 0
        for s in sentences:
            for w in s.split():
                seen += 1
                known += w.lower() in self.group_of
        return known / max(seen, 1)


def build_pos_lookup(conll_rows: Iterable[dict], min_count: int = 1,
                     skip_tags: Sequence[str] = ("NNP", "NNPS", "CD", "SYM", "NN|SYM")
                     ) -> WordLookup:
    """POS lookup from CoNLL-2003 rows (``tokens``, ``pos_tags``), lower-cased.

    Proper nouns and numbers are skipped: swapping "Reuters" for "Clinton" adds noise, not
    sentiment signal. Punctuation keeps its own tags, so "," swaps only with ",", ";" etc."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in conll_rows:
        for word, tag in zip(row["tokens"], row["pos_tags"]):
            if tag in skip_tags or word == "-DOCSTART-":
                continue
            counts[tag][word.lower()] += 1
    if min_count > 1:
        counts = {t: collections.Counter({w: n for w, n in c.items() if n >= min_count})
                  for t, c in counts.items()}
    if not counts:
        raise ValueError("no POS-tagged words found: pass CoNLL rows with 'tokens' and "
                         "'pos_tags' (ktlab.data.load_conll('train'))")
    return WordLookup(dict(counts))


def build_class_lookup(sentences: Sequence[str], labels: Sequence[int],
                       min_count: int = 2) -> WordLookup:
    """Class lookup: each word belongs to the label in whose sentences it is most frequent."""
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for sentence, label in zip(sentences, labels):
        counts[str(label)].update(w.lower() for w in sentence.split())
    counts = {g: collections.Counter({w: n for w, n in c.items() if n >= min_count})
              for g, c in counts.items()}
    return WordLookup(counts)


def mask_words(words: Sequence[str], p: float, rng: random.Random,
               mask_token: str = "[MASK]") -> list[str]:
    """Replace each word by ``mask_token`` with probability ``p``."""
    return [mask_token if rng.random() < p else w for w in words]


def swap_words(words: Sequence[str], p: float, rng: random.Random, lookup: WordLookup,
               protect: str = "[MASK]") -> list[str]:
    """Replace each word, with probability ``p``, by a same-group word from ``lookup``."""
    out = []
    for w in words:
        if w != protect and rng.random() < p:
            w = lookup.replacement(w, rng) or w
        out.append(w)
    return out


def sample_ngram(words: Sequence[str], rng: random.Random, n_min: int = 1,
                 n_max: int = 5) -> list[str]:
    """A random contiguous n-gram with ``n`` drawn uniformly from ``n_min..n_max`` (capped at the
    sentence length)."""
    if not words:
        return []
    n = min(rng.randint(n_min, n_max), len(words))
    start = rng.randint(0, len(words) - n)
    return list(words[start:start + n])


def augment_sentence(sentence: str, config: AugmentConfig, rng: random.Random,
                     lookup: Optional[WordLookup] = None) -> str:
    """One augmented copy of ``sentence`` (Tang et al., Algorithm 1): per word, draw u ~ U(0,1);
    u < p_mask -> mask; p_mask <= u < p_mask + p_swap -> swap; then maybe keep an n-gram."""
    if config.swap != "none" and config.p_swap > 0 and lookup is None:
        raise ValueError(f"swap={config.swap!r} needs a lookup (build_pos_lookup or "
                         "build_class_lookup), or use AugmentConfig(swap='none')")
    words = sentence.split()
    out = []
    for w in words:
        u = rng.random()
        if u < config.p_mask:
            out.append(config.mask_token)
        elif u < config.p_mask + config.p_swap and config.swap != "none":
            out.append(lookup.replacement(w, rng) or w)  # type: ignore[union-attr]
        else:
            out.append(w)
    if rng.random() < config.p_ngram:
        out = sample_ngram(out, rng, *config.ngram_range)
    return " ".join(out)


def augment_dataset(sentences: Sequence[str], config: AugmentConfig = AugmentConfig(),
                    lookup: Optional[WordLookup] = None, seed: int = 0,
                    max_tries: int = 3) -> list[str]:
    """Up to ``config.n_samples`` distinct new sentences per input (no originals, no
    duplicates, no empty strings), in input order. Deterministic for a given ``seed``."""
    rng = random.Random(seed)
    seen = set(sentences)
    out: list[str] = []
    for sentence in sentences:
        made = 0
        for _ in range(config.n_samples * max_tries):
            if made == config.n_samples:
                break
            new = augment_sentence(sentence, config, rng, lookup)
            if new not in seen and any(w != config.mask_token for w in new.split()):
                seen.add(new)
                out.append(new)
                made += 1
    return out
