"""How BERT learned what we later transfer: masked-LM masking, next-sentence pairs, a small
pretraining loop, evaluation against a unigram baseline, and a fill-mask demo.

* :class:`MLMMasker` - BERT's masking. Each non-special, non-padding token is *chosen* with
  probability 15% (so 15% of them in expectation, as in Hugging Face's collator and RoBERTa's
  dynamic masking; BERT's original script drew a fixed 15% count per packed 128-token
  sequence). A chosen token becomes ``[MASK]`` 80% of the time, a random token 10%, and stays
  unchanged 10%; the label is the original id at chosen positions and -100 elsewhere. With
  ``whole_word=True`` the choice is made per word: all WordPieces of a word (``##`` pieces) are
  chosen together, which stops the model from guessing ``##ala`` from ``ku``.
* :func:`nsp_pairs` - next-sentence prediction pairs from real documents (CoNLL-2003 keeps its
  newswire documents): 50% IsNext (the sentence that follows), 50% NotNext (a sentence from
  another document).
* :func:`pretrain` - trains a :class:`ktlab.nn.BertForPreTraining` with MLM (+ optional NSP).
  The MLM logits are computed only at the masked positions (BERT's ``masked_lm_positions``
  trick): with a 30k vocabulary that is most of the cost saved.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import random
import time
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ktlab.nn.bert import BertForPreTraining, BertModel

IGNORE_INDEX = -100
IS_NEXT, NOT_NEXT = 0, 1  # transformers' convention for next_sentence_label


# ---------------------------------------------------------------------------------------------
# Masked language modelling
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MLMMasker:
    """BERT's MLM corruption. Build it with :meth:`from_tokenizer`; call it on a batch."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    #: bool per vocabulary id: True for WordPiece continuations (``##...``); for whole words
    continuation: Optional[torch.Tensor] = None
    mlm_probability: float = 0.15
    mask_share: float = 0.8      # of chosen tokens -> [MASK]
    random_share: float = 0.1    # of chosen tokens -> a random token (the rest stay unchanged)
    whole_word: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_share + self.random_share > 1.0:
            raise ValueError("mask_share + random_share must not exceed 1")
        if self.whole_word and self.continuation is None:
            raise ValueError("whole_word=True needs the continuation table; build the masker "
                             "with MLMMasker.from_tokenizer(tokenizer, whole_word=True)")
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[list(self.special_ids)] = False
        #: the ids a "random token" may be drawn from: never [CLS]/[SEP]/[PAD]/[MASK]/[UNK]
        self.replacement_ids = keep.nonzero().squeeze(1)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, vocab: Optional["CompactVocab"] = None,
                       **kwargs: Any) -> "MLMMasker":
        """The masker for ``tokenizer``'s ids, or for the renumbered ids of a
        :class:`CompactVocab`."""
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no [MASK] token, so it cannot be used for MLM")
        continuation = torch.zeros(len(tokenizer), dtype=torch.bool)
        for token, idx in tokenizer.get_vocab().items():
            if token.startswith("##"):
                continuation[idx] = True
        specials = sorted(set(tokenizer.all_special_ids))
        if vocab is None:
            return cls(mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                       special_ids=tuple(specials), continuation=continuation, **kwargs)
        return cls(mask_token_id=int(vocab.lookup[tokenizer.mask_token_id]),
                   vocab_size=len(vocab), special_ids=tuple(vocab.lookup[specials].tolist()),
                   continuation=continuation[vocab.old_ids], **kwargs)

    def candidates(self, input_ids: torch.Tensor,
                   attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Positions that may be chosen: not special, not padding."""
        ok = ~torch.isin(input_ids, torch.tensor(self.special_ids, device=input_ids.device))
        if attention_mask is not None:
            ok &= attention_mask.bool()
        return ok

    def choose(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The boolean ``(batch, T)`` tensor of positions to predict."""
        ok = self.candidates(input_ids, attention_mask)
        u = torch.rand(input_ids.shape, generator=generator)
        if self.whole_word:
            # every token reuses the random number of the first piece of its word
            starts = ~self.continuation[input_ids] | ~ok
            pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
            u = u.gather(1, first)
        return (u < self.mlm_probability) & ok

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(corrupted_ids, labels)``; the input is not modified."""
        chosen = self.choose(input_ids, attention_mask, generator)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        r = torch.rand(input_ids.shape, generator=generator)
        to_mask = chosen & (r < self.mask_share)
        to_random = chosen & (r >= self.mask_share) & (r < self.mask_share + self.random_share)
        corrupted = input_ids.clone()
        corrupted[to_mask] = self.mask_token_id
        picks = torch.randint(len(self.replacement_ids), input_ids.shape, generator=generator)
        corrupted[to_random] = self.replacement_ids[picks][to_random]
        return corrupted, labels


# ---------------------------------------------------------------------------------------------
# Next-sentence prediction
# ---------------------------------------------------------------------------------------------

def conll_documents(split: str = "train", min_sentences: int = 2) -> list[list[str]]:
    """CoNLL-2003 as documents: lists of sentences (tokens joined by spaces), in order."""
    from ktlab.data import load_conll
    ds = load_conll(split)
    docs: dict[int, list[str]] = collections.defaultdict(list)
    for doc_id, tokens in zip(ds["document_id"], ds["tokens"]):
        docs[doc_id].append(" ".join(tokens))
    return [d for _, d in sorted(docs.items()) if len(d) >= min_sentences]


def pack_documents(documents: Sequence[Sequence[str]], min_words: int = 20) -> list[list[str]]:
    """Merge consecutive sentences into chunks of at least ``min_words`` words.

    BERT's segments A and B are *spans of text* (up to 512 tokens together), not single
    sentences; CoNLL's sentences are short (headlines, "Peter Blackburn"), so packing them gives
    NSP enough evidence of topic and flow. Documents left with fewer than two chunks are dropped."""
    packed = []
    for doc in documents:
        chunks: list[str] = []
        current: list[str] = []
        for sentence in doc:
            current.append(sentence)
            if sum(len(s.split()) for s in current) >= min_words:
                chunks.append(" ".join(current))
                current = []
        if current:
            if chunks:
                chunks[-1] += " " + " ".join(current)
            else:
                chunks.append(" ".join(current))
        if len(chunks) >= 2:
            packed.append(chunks)
    return packed


def nsp_pairs(documents: Sequence[Sequence[str]], seed: int = 0,
              p_next: float = 0.5) -> list[dict[str, Any]]:
    """One pair per consecutive sentence pair of every document.

    With probability ``p_next`` the pair is ``(s_i, s_{i+1})`` labelled ``IS_NEXT`` (0); otherwise
    ``s_{i+1}`` is replaced by a random sentence of a *different* document, ``NOT_NEXT`` (1).
    Each pair records ``doc`` (and ``doc_b``) so the pairing can be audited."""
    if sum(len(d) >= 2 for d in documents) == 0:
        raise ValueError("NSP needs documents with at least two sentences")
    if len(documents) < 2:
        raise ValueError("NotNext pairs need at least two documents")
    rng = random.Random(seed)
    pairs = []
    for d, doc in enumerate(documents):
        for i in range(len(doc) - 1):
            if rng.random() < p_next:
                pairs.append({"a": doc[i], "b": doc[i + 1], "label": IS_NEXT, "doc": d, "doc_b": d})
            else:
                other = rng.randrange(len(documents) - 1)
                other += other >= d  # any document but this one
                b = documents[other][rng.randrange(len(documents[other]))]
                pairs.append({"a": doc[i], "b": b, "label": NOT_NEXT, "doc": d, "doc_b": other})
    return pairs


# ---------------------------------------------------------------------------------------------
# Data for the pretraining run
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CompactVocab:
    """The WordPiece ids a corpus actually uses, renumbered 0..n-1 (specials first).

    MiniLM's vocabulary has 30,522 entries; our course text uses a fraction of them often
    enough to learn. A from-scratch BERT over the compact vocabulary has a ~4x smaller
    embedding/output matrix, so each step is cheaper and the softmax has fewer rare classes.
    Ids outside it map to ``[UNK]``. :meth:`encode`/:meth:`decode` translate whole tensors."""

    old_ids: torch.Tensor   # new id -> tokenizer id
    lookup: torch.Tensor    # tokenizer id -> new id

    @classmethod
    def from_examples(cls, tokenizer: Any, examples: Sequence[dict],
                      min_count: int = 2) -> "CompactVocab":
        counts = torch.zeros(len(tokenizer), dtype=torch.long)
        for ex in examples:
            counts += torch.bincount(torch.tensor(ex["input_ids"]), minlength=len(tokenizer))
        specials = sorted(set(tokenizer.all_special_ids))
        frequent = [i for i in (counts >= min_count).nonzero().squeeze(1).tolist()
                    if i not in specials]
        old_ids = torch.tensor(specials + frequent)
        lookup = torch.full((len(tokenizer),), specials.index(tokenizer.unk_token_id),
                            dtype=torch.long)
        lookup[old_ids] = torch.arange(len(old_ids))
        return cls(old_ids, lookup)

    def __len__(self) -> int:
        return len(self.old_ids)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lookup[ids]

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.old_ids[ids]

    def apply(self, examples: Sequence[dict]) -> list[dict]:
        """Examples with ``input_ids`` renumbered (other fields unchanged)."""
        return [{**ex, "input_ids": self.lookup[torch.tensor(ex["input_ids"])].tolist()}
                for ex in examples]


def encode_examples(tokenizer: Any, pairs: Sequence[dict] = (), singles: Sequence[str] = (),
                    max_length: int = 64) -> list[dict[str, Any]]:
    """Tokenise NSP pairs (``[CLS] A [SEP] B [SEP]``, segments 0/1) and single sentences
    (MLM only: ``next_sentence_label = -100``)."""
    out: list[dict[str, Any]] = []
    if pairs:
        enc = tokenizer([p["a"] for p in pairs], [p["b"] for p in pairs], truncation=True,
                        max_length=max_length)
        for ids, types, p in zip(enc["input_ids"], enc["token_type_ids"], pairs):
            out.append({"input_ids": ids, "token_type_ids": types, "nsp": p["label"]})
    if singles:
        enc = tokenizer(list(singles), truncation=True, max_length=max_length)
        for ids, types in zip(enc["input_ids"], enc["token_type_ids"]):
            out.append({"input_ids": ids, "token_type_ids": types, "nsp": IGNORE_INDEX})
    return out


def collate(items: Sequence[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    length = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = torch.tensor(it["input_ids"])
        types[row, :n] = torch.tensor(it["token_type_ids"])
        mask[row, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "next_sentence_label": torch.tensor([it["nsp"] for it in items])}


@dataclasses.dataclass
class CourseCorpus:
    train: list[dict]
    heldout: list[dict]
    describe: str


def course_corpus(tokenizer: Any, n_sst2: int = 6000, n_sst2_heldout: int = 872,
                  max_length: int = 64, segment_words: int = 20, seed: int = 0) -> CourseCorpus:
    """Real course text: NSP pairs of packed segments (:func:`pack_documents`) from CoNLL-2003
    train documents (held out: valid documents) plus single SST-2 sentences (train subset;
    held out: dev). Token ids are the tokenizer's; see :class:`CompactVocab` to renumber."""
    from ktlab.data import load_sst2, subset
    train_pairs = nsp_pairs(pack_documents(conll_documents("train"), segment_words), seed=seed)
    held_pairs = nsp_pairs(pack_documents(conll_documents("valid"), segment_words), seed=seed + 1)
    sst_train = list(subset(load_sst2("train"), n_sst2, seed=seed)["sentence"])
    sst_held = list(subset(load_sst2("dev"), n_sst2_heldout, seed=seed)["sentence"])
    train = encode_examples(tokenizer, train_pairs, sst_train, max_length)
    held = encode_examples(tokenizer, held_pairs[:1000], sst_held, max_length)
    text = (f"train: {len(train_pairs)} CoNLL NSP pairs (segments of >= {segment_words} words) + "
            f"{len(sst_train)} SST-2 sentences; "
            f"held out: {min(len(held_pairs), 1000)} CoNLL-valid pairs + {len(sst_held)} SST-2 dev")
    return CourseCorpus(train, held, text)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------

def pretraining_losses(model: BertForPreTraining, batch: dict[str, torch.Tensor],
                       labels: torch.Tensor, use_nsp: bool = True
                       ) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """MLM (and NSP) losses; MLM logits only at masked positions. Returns
    ``(mlm_loss, nsp_loss_or_None, mlm_logits_at_masked, nsp_logits)``."""
    out = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    where = labels != IGNORE_INDEX
    logits = model.cls.predictions(out.last_hidden_state[where])
    mlm = F.cross_entropy(logits, labels[where])
    nsp_logits = model.cls.seq_relationship(out.pooler_output)
    nsp = None
    nsp_labels = batch["next_sentence_label"]
    if use_nsp and bool((nsp_labels != IGNORE_INDEX).any()):
        nsp = F.cross_entropy(nsp_logits, nsp_labels, ignore_index=IGNORE_INDEX)
    return mlm, nsp, logits, nsp_logits


@dataclasses.dataclass
class PretrainHistory:
    step: list[int] = dataclasses.field(default_factory=list)
    mlm_loss: list[float] = dataclasses.field(default_factory=list)
    nsp_loss: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    examples: int = 0


def pretrain(model: BertForPreTraining, examples: Sequence[dict], masker: MLMMasker, *,
             steps: int = 300, batch_size: int = 32, lr: float = 1e-3, warmup: float = 0.1,
             use_nsp: bool = True, seed: int = 0, log_every: int = 10,
             progress: bool = True) -> PretrainHistory:
    """AdamW with linear warm-up and decay; fresh (dynamic) masks every batch. ``use_nsp=False``
    trains MLM only (the ablation of BERT's Table 5). Runs on the model's device. Logged
    losses are means over ``log_every`` steps."""
    if not examples:
        raise ValueError("no training examples")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    from ktlab.train import adamw  # fused where torch has the kernel
    opt = adamw(groups, lr=lr)
    n_warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / n_warm, max(0.0, (steps - s) / max(1, steps - n_warm))))
    hist = PretrainHistory()
    order = rng.permutation(len(examples))
    cursor, mlm_acc, nsp_acc, nsp_n = 0, 0.0, 0.0, 0
    device = next(model.parameters()).device  # masks are drawn on the CPU, then moved
    start = time.perf_counter()
    model.train()
    bar = _progress(range(steps), progress)
    for step in bar:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(examples)), 0
        batch = collate([examples[i] for i in order[cursor:cursor + batch_size]])
        cursor += batch_size
        corrupted, labels = masker(batch["input_ids"], batch["attention_mask"], gen)
        batch["input_ids"] = corrupted
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = labels.to(device)
        mlm, nsp, _, _ = pretraining_losses(model, batch, labels, use_nsp)
        loss = mlm if nsp is None else mlm + nsp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.examples += len(labels)
        mlm_acc += mlm.item()
        if nsp is not None:
            nsp_acc, nsp_n = nsp_acc + nsp.item(), nsp_n + 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            hist.step.append(step + 1)
            hist.mlm_loss.append(mlm_acc / n)
            hist.nsp_loss.append(nsp_acc / nsp_n if nsp_n else math.nan)
            mlm_acc, nsp_acc, nsp_n = 0.0, 0.0, 0
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(mlm=f"{hist.mlm_loss[-1]:.2f}", nsp=f"{hist.nsp_loss[-1]:.3f}")
    hist.seconds = time.perf_counter() - start
    model.eval()
    return hist


def _progress(it: Iterable, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc="pretraining", mininterval=2.0)


@dataclasses.dataclass
class MLMEvaluation:
    masked_accuracy: float
    unigram_accuracy: float
    mlm_loss: float
    nsp_accuracy: float
    n_masked: int


def unigram_counts(examples: Sequence[dict], masker: MLMMasker) -> torch.Tensor:
    """Frequency of every vocabulary id among maskable training tokens."""
    counts = torch.zeros(masker.vocab_size, dtype=torch.long)
    for ex in examples:
        ids = torch.tensor(ex["input_ids"])
        ids = ids[masker.candidates(ids[None])[0]]
        counts += torch.bincount(ids, minlength=masker.vocab_size)
    return counts


@torch.no_grad()
def evaluate_mlm(model: BertForPreTraining, examples: Sequence[dict], masker: MLMMasker,
                 counts: torch.Tensor, batch_size: int = 64, seed: int = 1234) -> MLMEvaluation:
    """Held-out masked-token accuracy (fixed-seed masks, so two models see the same ones) next to
    the unigram baseline: always predict the most frequent training token."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    most_frequent = int(counts.argmax())
    correct = uni = total = 0
    loss_sum = 0.0
    nsp_correct = nsp_total = 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i:i + batch_size])
        corrupted, labels = masker(batch["input_ids"], batch["attention_mask"], gen)
        batch["input_ids"] = corrupted
        mlm, _, logits, nsp_logits = pretraining_losses(model, batch, labels, use_nsp=False)
        gold = labels[labels != IGNORE_INDEX]
        correct += int((logits.argmax(-1) == gold).sum())
        uni += int((gold == most_frequent).sum())
        total += len(gold)
        loss_sum += mlm.item() * len(gold)
        nsp_labels = batch["next_sentence_label"]
        has = nsp_labels != IGNORE_INDEX
        nsp_correct += int((nsp_logits.argmax(-1)[has] == nsp_labels[has]).sum())
        nsp_total += int(has.sum())
    return MLMEvaluation(correct / max(total, 1), uni / max(total, 1), loss_sum / max(total, 1),
                         nsp_correct / max(nsp_total, 1), total)


@torch.no_grad()
def fill_mask(model: BertForPreTraining, tokenizer: Any, text: str, top_k: int = 5,
              vocab: Optional[CompactVocab] = None) -> list[list[tuple[str, float]]]:
    """For every ``[MASK]`` in ``text``: the ``top_k`` (token, probability) predictions
    (``vocab``: the :class:`CompactVocab` the model was trained on, if any)."""
    if tokenizer.mask_token not in text:
        raise ValueError(f"text must contain {tokenizer.mask_token!r}, e.g. "
                         f"'the movie was {tokenizer.mask_token} .'")
    model.eval()
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"] if vocab is None else vocab.encode(enc["input_ids"])
    out = model.bert(ids, enc["attention_mask"], enc["token_type_ids"])
    where = enc["input_ids"][0] == tokenizer.mask_token_id
    probs = model.cls.predictions(out.last_hidden_state[0, where]).softmax(-1)
    top = probs.topk(top_k, dim=-1)
    indices = top.indices if vocab is None else vocab.decode(top.indices)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, row)]
            for ps, row in zip(top.values, indices)]


# ---------------------------------------------------------------------------------------------
# Heads on an existing encoder, and domain-adaptive MLM (full profile)
# ---------------------------------------------------------------------------------------------

def with_new_mlm_head(encoder: BertModel) -> BertForPreTraining:
    """MiniLM ships without an MLM head: put fresh heads on it, decoder tied to the embeddings.
    Only the transform (``hidden x hidden`` + LayerNorm) and the per-token bias are new."""
    return BertForPreTraining.from_encoder(encoder)


def domain_adaptive_mlm(teacher: str, texts: Sequence[str], *, steps: int = 1000,
                        batch_size: int = 32, lr: float = 5e-5, max_length: int = 128,
                        seed: int = 0, device: Optional[str] = None) -> tuple[BertForPreTraining,
                                                                              PretrainHistory]:
    """Continue MLM pretraining of a hub BERT (e.g. ``bert-base-uncased``, whose checkpoint has
    its MLM head) on in-domain text - "don't stop pretraining" (Gururangan et al., 2020). Meant for
    the full profile (GPU + internet); a checkpoint without an MLM head gets a new tied one."""
    from ktlab.models import load_tokenizer
    tokenizer = load_tokenizer(teacher)
    try:
        model = BertForPreTraining.from_hf(teacher)
    except ValueError:
        model = BertForPreTraining.from_hf(teacher, allow_new_heads=True)
    examples = encode_examples(tokenizer, singles=list(texts), max_length=max_length)
    masker = MLMMasker.from_tokenizer(tokenizer)
    if device:
        model.to(device)
    hist = pretrain(model, examples, masker, steps=steps, batch_size=batch_size, lr=lr,
                    use_nsp=False, seed=seed)
    return model, hist


# ---------------------------------------------------------------------------------------------
# A quick downstream probe (for the MLM-only vs MLM+NSP ablation)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sentence_features(encoder: BertModel, tokenizer: Any, sentences: Sequence[str],
                      batch_size: int = 128, max_length: int = 64) -> np.ndarray:
    """Frozen features: mean of the last hidden states over real tokens, concatenated with the
    pooled [CLS] vector (the one NSP trains)."""
    encoder.eval()
    feats = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(list(sentences[i:i + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        out = encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        m = enc["attention_mask"][..., None].float()
        mean = (out.last_hidden_state * m).sum(1) / m.sum(1)
        feats.append(torch.cat([mean, out.pooler_output], dim=-1).numpy())
    return np.concatenate(feats)


def sst2_probe(encoder: BertModel, tokenizer: Any, n_train: int = 2000, seed: int = 0) -> float:
    """SST-2 dev accuracy of a logistic regression on frozen features - a cheap measure of how
    much sentiment-relevant structure pretraining put into the encoder."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ktlab.data import load_sst2, subset
    train = subset(load_sst2("train"), n_train, seed=seed + 99, stratify_by="label")
    dev = load_sst2("dev")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    clf.fit(sentence_features(encoder, tokenizer, train["sentence"]), train["label"])
    return float(clf.score(sentence_features(encoder, tokenizer, dev["sentence"]), dev["label"]))
