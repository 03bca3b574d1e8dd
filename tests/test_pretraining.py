"""ktlab.pretraining: BERT's masking proportions (statistically), NSP pairs, and a tiny run."""
from __future__ import annotations

import math

import pytest
import torch

from ktlab import pretraining as P
from ktlab.nn import BertConfig, BertForPreTraining

N_ROWS, LENGTH = 400, 64


@pytest.fixture(scope="module")
def tokenizer():
    from ktlab.models import load_tokenizer
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Real padded sentences: varied lengths, many WordPiece continuations."""
    from ktlab.data import load_sst2
    sentences = list(load_sst2("dev")["sentence"][:N_ROWS])
    return tokenizer(sentences, padding="max_length", truncation=True, max_length=LENGTH,
                     return_tensors="pt")


def _binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_proportions(tokenizer, batch, whole_word):
    masker = P.MLMMasker.from_tokenizer(tokenizer, whole_word=whole_word)
    ids, am = batch["input_ids"], batch["attention_mask"]
    gen = torch.Generator().manual_seed(0)
    corrupted, labels = masker(ids, am, gen)
    assert torch.equal(ids, batch["input_ids"]), "input must not be modified in place"
    candidates = masker.candidates(ids, am)
    chosen = labels != -100
    n_cand, n_chosen = int(candidates.sum()), int(chosen.sum())
    assert n_cand > 5000
    if not whole_word:  # token-level Bernoulli(0.15)
        assert _binomial_ok(n_chosen, n_cand, 0.15)
    else:  # words are chosen together, so the token share has more variance
        assert 0.12 < n_chosen / n_cand < 0.18
    # never a special token, never padding
    assert not (chosen & ~candidates).any()
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any() and not (chosen & (am == 0)).any()
    # labels carry the original ids at chosen positions
    assert torch.equal(labels[chosen], ids[chosen])
    # 80 / 10 / 10 among the chosen
    masked = corrupted[chosen] == tokenizer.mask_token_id
    unchanged = corrupted[chosen] == ids[chosen]
    randomised = ~masked & ~unchanged
    assert _binomial_ok(int(masked.sum()), n_chosen, 0.8)
    # a random replacement may equal the original token by chance (1/30k): tiny slack
    assert _binomial_ok(int(unchanged.sum()), n_chosen, 0.1 + 0.1 / 30000)
    assert _binomial_ok(int(randomised.sum()), n_chosen, 0.1)
    assert not torch.isin(corrupted[chosen][randomised], torch.tensor(tokenizer.all_special_ids)).any()
    # positions not chosen are untouched
    assert torch.equal(corrupted[~chosen], ids[~chosen])


def test_whole_word_masking_takes_every_piece(tokenizer, batch):
    masker = P.MLMMasker.from_tokenizer(tokenizer, whole_word=True)
    ids, am = batch["input_ids"], batch["attention_mask"]
    _, labels = masker(ids, am, torch.Generator().manual_seed(3))
    chosen = labels != -100
    cont = masker.continuation[ids] & am.bool()
    # a continuation piece is chosen exactly when the piece before it is
    prev = chosen[:, :-1]
    assert torch.equal(chosen[:, 1:][cont[:, 1:]], prev[cont[:, 1:]])
    assert int(cont.sum()) > 100  # the test really saw multi-piece words
    # token-level masking does split words
    _, tok_labels = P.MLMMasker.from_tokenizer(tokenizer)(ids, am, torch.Generator().manual_seed(3))
    tok_chosen = tok_labels != -100
    assert (tok_chosen[:, 1:][cont[:, 1:]] != tok_chosen[:, :-1][cont[:, 1:]]).any()


def test_masker_errors(tokenizer):
    with pytest.raises(ValueError, match="mlm_probability"):
        P.MLMMasker.from_tokenizer(tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="continuation"):
        P.MLMMasker(mask_token_id=3, vocab_size=10, special_ids=(0, 1), whole_word=True)


def test_nsp_pairs_from_documents():
    docs = [[f"d{d} s{i}" for i in range(5 + d % 3)] for d in range(40)]
    pairs = P.nsp_pairs(docs, seed=0)
    assert len(pairs) == sum(len(d) - 1 for d in docs)
    labels = [p["label"] for p in pairs]
    assert _binomial_ok(sum(labels), len(labels), 0.5)
    for p in pairs:
        d = p["doc"]
        i = docs[d].index(p["a"])
        if p["label"] == P.IS_NEXT:
            assert p["b"] == docs[d][i + 1]
        else:
            assert p["doc_b"] != d and p["b"] in docs[p["doc_b"]]
    assert P.nsp_pairs(docs, seed=0) == pairs  # seeded
    with pytest.raises(ValueError, match="two documents"):
        P.nsp_pairs([["a", "b"]])


def test_conll_documents_are_real_and_packed():
    docs = P.conll_documents("valid")
    assert len(docs) > 100 and all(len(d) >= 2 for d in docs)
    assert all(isinstance(s, str) and s for s in docs[0])
    packed = P.pack_documents(docs, min_words=20)
    assert all(len(d) >= 2 for d in packed)
    # every chunk but a document's last reaches 20 words, and no words are lost
    assert all(len(c.split()) >= 20 for d in packed for c in d)
    kept = {i for i, d in enumerate(docs) if " ".join(d) in {" ".join(p) for p in packed}}
    assert len(kept) == len(packed)


def test_tiny_pretraining_run_learns(tokenizer):
    """A 1-layer BERT on real text: MLM loss falls and beats the unigram baseline on held-out."""
    from ktlab.config import seed_everything
    from ktlab.data import load_sst2
    sentences = list(load_sst2("train")["sentence"][:3000])
    train = P.encode_examples(tokenizer, singles=sentences[:2600], max_length=32)
    held = P.encode_examples(tokenizer, singles=sentences[2600:], max_length=32)
    vocab = P.CompactVocab.from_examples(tokenizer, train, min_count=2)
    assert 1000 < len(vocab) < len(tokenizer)
    train, held = vocab.apply(train), vocab.apply(held)
    masker = P.MLMMasker.from_tokenizer(tokenizer, vocab=vocab)
    assert masker.mask_token_id == int(vocab.lookup[tokenizer.mask_token_id])
    counts = P.unigram_counts(train, masker)
    seed_everything(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=len(vocab), num_hidden_layers=1,
                                               hidden_size=64, num_attention_heads=2,
                                               intermediate_size=128))
    before = P.evaluate_mlm(model, held, masker, counts)
    hist = P.pretrain(model, train, masker, steps=150, batch_size=32, lr=2e-3, use_nsp=False,
                      log_every=25, progress=False)
    assert hist.mlm_loss[-1] < hist.mlm_loss[0] - 0.8
    ev = P.evaluate_mlm(model, held, masker, counts)
    assert ev.n_masked == before.n_masked > 300  # fixed-seed masks: same positions both times
    assert ev.mlm_loss < before.mlm_loss - 1.5  # ln(vocab) ~ 8.4 at the start
    assert ev.masked_accuracy > before.masked_accuracy
    # (beating the unigram baseline takes a few hundred steps of a 2-layer model: notebook 02)
    preds = P.fill_mask(model, tokenizer, "the movie was [MASK] .", top_k=3, vocab=vocab)
    assert len(preds) == 1 and len(preds[0]) == 3
    assert all(tok in tokenizer.get_vocab() for tok, _ in preds[0])
    with pytest.raises(ValueError, match="MASK"):
        P.fill_mask(model, tokenizer, "no mask here")


def test_nsp_loss_is_ignored_for_single_sentences(tokenizer):
    items = P.encode_examples(tokenizer, pairs=[{"a": "a b", "b": "c d", "label": 1}],
                              singles=["e f"])
    batch = P.collate(items)
    assert batch["next_sentence_label"].tolist() == [1, -100]
    assert batch["token_type_ids"][0].max() == 1 and batch["token_type_ids"][1].max() == 0
    model = BertForPreTraining(BertConfig.tiny(vocab_size=len(tokenizer), num_hidden_layers=1))
    model.eval()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1] = batch["input_ids"][:, 1]
    _, nsp, _, _ = P.pretraining_losses(model, batch, labels, use_nsp=True)
    only_pair = {k: v[:1] for k, v in batch.items()}
    _, nsp_pair, _, _ = P.pretraining_losses(model, only_pair, labels[:1], use_nsp=True)
    assert torch.isfinite(nsp) and abs(nsp.item() - nsp_pair.item()) < 1e-5
    singles_only = {k: v[1:] for k, v in batch.items()}
    assert P.pretraining_losses(model, singles_only, labels[1:], use_nsp=True)[1] is None


def test_new_mlm_head_on_minilm_is_tied():
    from ktlab.nn import from_hf
    model = P.with_new_mlm_head(from_hf("minilm"))
    assert model.is_tied
    assert model.cls.predictions.decoder.weight.shape == (30522, 384)
