"""Real, seeded inputs for the *result* tasks of notebooks 03-06.

A result task asks the student to run a small computation on real data and report the number or
the decision it gives: the best β of a sweep on SST-2 dev sentences, whether the committed bench's
BiLSTM is significantly better than its baseline, the entity F1 of a real tagger on CoNLL-2003,
how a multi-task model did over seeds. The solution notebooks call these functions for the data
their answer is computed on, and the checks call the same functions, so a check's real-data case
is the notebook's own computation, compared with ktlab's reference on the same inputs.

The data come from two places: the offline data mirror (``KTLAB_DATA_DIR``: SST-2, CoNLL-2003)
and the bench results committed under ``results/`` (real predictions of the real models, found
next to the package, so they are found wherever the notebook runs, the grader's copy included).
Each function reads its files once per process and returns fresh copies: code that modifies what
it was given cannot change what a check compares against.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

#: The committed bench results of the repository ktlab is installed from.
#: The initial weights' standard deviation of the β-sweep models (BERT's default is 0.02): large
#: enough that two unrelated networks disagree, so their blend is measurably less confident.
SWEEP_INIT_STD = 0.1
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


def _bench(name: str) -> dict:
    path = RESULTS_DIR / name / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no bench results at {path}: the result tasks read the committed "
                                "results/ folder of the course repository (install ktlab with "
                                "`pip install -e .` from it)")
    return json.loads(path.read_text())


def has_bench(name: str) -> bool:
    """Whether ``results/<name>/results.json`` is there (checks skip those cases otherwise)."""
    return (RESULTS_DIR / name / "results.json").is_file()


@functools.lru_cache(maxsize=None)
def _sentiment() -> dict:
    r = _bench("sentiment-bench")
    preds = {"teacher": list(r["teacher"]["dev_predictions"])}
    preds.update({s["name"]: list(s["dev_predictions"]) for s in r["students"]})
    return {"labels": list(r["dev"]["labels"]), "predictions": preds}


def sentiment_bench() -> Dict[str, Any]:
    """SST-2 dev (all 872 sentences) from ``results/sentiment-bench``: ``labels`` and
    ``predictions`` (model name -> one predicted label per sentence: ``"teacher"``,
    ``"bilstm/hard"``, ``"bilstm/hard+pca"``, ``"cnn/kd"``, ...)."""
    return copy.deepcopy(_sentiment())


@functools.lru_cache(maxsize=None)
def _ner() -> dict:
    r = _bench("ner-bench")
    names = r["labels"]

    def tags(rows: List[List[int]]) -> List[List[str]]:
        return [[names[i] for i in row] for row in rows]

    preds = {"teacher": tags(r["teacher"]["test_predictions"])}
    preds.update({s["name"]: tags(s["test_predictions"]) for s in r["students"]})
    return {"tokens": r["test"]["tokens"], "gold": tags(r["test"]["gold"]), "predictions": preds}


def ner_bench() -> Dict[str, Any]:
    """CoNLL-2003 test (3,453 sentences) from ``results/ner-bench``: ``tokens``, ``gold`` IOB2
    tags and ``predictions`` (model name -> predicted tags per sentence: ``"teacher"``,
    ``"bilstm/hard"``, ``"bilstm/kd+crf+pca"``, ``"tiny/kd"``, ...)."""
    return copy.deepcopy(_ner())


@functools.lru_cache(maxsize=None)
def _conll_gold(split: str) -> Tuple[Tuple[str, ...], ...]:
    from ktlab.data import load_conll
    return tuple(tuple(tags) for tags in load_conll(split)["ner_tags"])


def conll_gold(split: str = "valid", n: int = 500) -> List[List[str]]:
    """The gold IOB2 tags of the first ``n`` sentences of a CoNLL-2003 split (data mirror)."""
    return [list(tags) for tags in _conll_gold(split)[:n]]


@functools.lru_cache(maxsize=None)
def _multitask() -> dict:
    r = _bench("multitask-bench")
    return {"tasks": r["tasks"], "seeds": r["seeds"],
            "runs": [{k: run[k] for k in ("model", "task", "seed", "score")} for run in r["runs"]]}


def multitask_bench() -> Dict[str, Any]:
    """The runs of ``results/multitask-bench`` (3 seeds): ``runs`` is a list of
    ``{"model", "task", "seed", "score"}`` (score in points), plus ``tasks`` and ``seeds``."""
    return copy.deepcopy(_multitask())


@functools.lru_cache(maxsize=None)
def _training_set_sizes() -> Tuple[Tuple[str, int], ...]:
    from ktlab.data import load_conll, load_sst2
    conll = len(load_conll("train"))
    return (("sst2", len(load_sst2("train"))), ("ner", conll), ("pos", conll), ("chunk", conll))


def training_set_sizes() -> Dict[str, int]:
    """The real training-set sizes of notebook 06's four tasks, read from the data mirror
    (SST-2: 67,349 sentences; NER, POS and chunking share CoNLL-2003's 14,041)."""
    return dict(_training_set_sizes())


@functools.lru_cache(maxsize=None)
def _sweep(n_dev: int, seed: int) -> tuple:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ktlab.data import PadCollator, encode_sentences, load_sst2
    from ktlab.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    dev = load_sst2("dev").select(range(n_dev))
    batch = PadCollator(tokenizer.pad_token_id)(encode_sentences(tokenizer, dev["sentence"],
                                                                 max_length=64))
    batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
             "labels": torch.tensor(dev["label"])}
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        initializer_range=SWEEP_INIT_STD)
    states = []
    with torch.random.fork_rng(devices=[]):
        for s in (seed, seed + 1):
            torch.manual_seed(s)
            states.append(BertForSequenceClassification(config).state_dict())
    return config, states, batch


def sweep_models(n_dev: int = 128, seed: int = 4) -> tuple:
    """``(target, source, batch)`` for the β sweep of exercise 03: two seeded, untrained tiny
    BERTs (1 layer, hidden 16, MiniLM's WordPiece vocabulary, initial weights of standard
    deviation :data:`SWEEP_INIT_STD`; the target seeded with ``seed``, the source with
    ``seed + 1``), freshly built in training mode, and the first ``n_dev`` SST-2 dev sentences as
    one padded batch (``input_ids``, ``attention_mask``, ``labels``). With the default seed the
    dev loss is lowest strictly between β = 0 and β = 1, so a sweep that blends each β into the
    previous blend lands elsewhere."""
    import torch
    from transformers import BertForSequenceClassification

    config, states, batch = _sweep(n_dev, seed)
    models = []
    with torch.random.fork_rng(devices=[]):  # building draws weights: keep the caller's RNG
        for state in states:
            model = BertForSequenceClassification(config)
            model.load_state_dict(state)
            models.append(model.train())
    return models[0], models[1], {k: v.clone() for k, v in batch.items()}
