"""Looking inside the teacher and its students: attributions, faithfulness, robustness, FGM.

The code behind ``ktlab run explain`` and notebook 09, which calls the same stages one cell each:

==================================  ======================================================
stage                               function
==================================  ======================================================
1. the trained models               :func:`ktlab.experiments.serving.train_or_load`
2. integrated gradients             :func:`attribute_all` (:mod:`ktlab.explain`)
3. does the student use the         :func:`compare_reasons` (rank correlation with the
   teacher's reasons?                teacher, ``kd`` vs ``hard``)
4. attention vs gradients           :func:`attention_agreement`
5. faithfulness (deletion)          :func:`faithfulness` (top-k vs random k tokens)
6. LIME beside IG                   :func:`lime_beside_ig`
7. perturbed dev sets               :func:`perturbed_sets` (:mod:`ktlab.robustness`)
8. adversarial training (FGM)       :func:`train_fgm_teachers`, :func:`train_fgm_student`
9. clean vs perturbed accuracy      :func:`robustness_table`
==================================  ======================================================

Sentence-level comparisons (teacher vs student attributions) are made only on the dev sentences
where both models predict the same class, so both attributions explain the *same* decision.
The adversarially trained teacher is compared with a plain teacher trained on the same sentences
with the same recipe: in the bench both see all of SST-2 and the plain one *is* the serving
teacher; the quick profile trains both on a small subset. The FGM student is compared with the
serving ``kd`` student, trained on the same sentences with the same steps.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ktlab.experiments import common, serving

SCHEMA = "ktlab.explain/1"


@dataclasses.dataclass(frozen=True)
class ExplainSizes:
    """How much is explained and trained. ``None`` = every dev sentence."""

    ig_sentences: Optional[int]     #: dev sentences attributed by integrated gradients
    ig_steps: int                   #: Riemann steps along the path
    lime_samples: int               #: perturbed copies LIME fits its linear model on
    fgm_teacher_train: Optional[int]  #: sentences the plain and the FGM teacher are fine-tuned
    #: on (None: the serving teacher's whole training set; the serving teacher is then the plain one)
    fgm_epsilon: float = 1.0        #: L2 norm of the adversarial perturbation per sentence (BiLSTM)
    #: the teacher's: MiniLM's word vectors have norm ~1.07 (the BiLSTM's 300-d ones ~17), and
    #: at epsilon = 1 one FGM step flips 86% of a fine-tuned teacher's dev predictions (0.1: 23%),
    #: so training on epsilon = 1 collapses it to one class (measured: 50.9% on quick)
    fgm_teacher_epsilon: float = 0.1
    perturb_p: float = 0.15         #: per-word probability of a typo / swap / drop
    deletion_ks: tuple = (1, 2, 3)
    seed_offset: int = 2            #: the FGM subset's seed is the run's seed + this


PROFILE_SIZES = {
    "quick": ExplainSizes(ig_sentences=96, ig_steps=16, lime_samples=300, fgm_teacher_train=800),
    "bench": ExplainSizes(ig_sentences=None, ig_steps=50, lime_samples=2000,
                          fgm_teacher_train=None),
    "full": ExplainSizes(ig_sentences=None, ig_steps=50, lime_samples=5000,
                         fgm_teacher_train=None),
}

#: Which students are explained (``kd`` learned from the teacher's logits; ``hard`` did not).
STUDENTS = ("hard", "kd", "hard+pca")


# ----------------------------------------------------------------------------- 2. attributions

def attribute_all(models: serving.ServingModels, sentences: Sequence[str], sizes: ExplainSizes
                  ) -> dict[str, list]:
    """Integrated gradients of every model (teacher and students), each towards its own
    prediction, on the same sentences."""
    from ktlab.explain import integrated_gradients
    out = {"teacher": integrated_gradients(models.teacher, models.tokenizer, list(sentences),
                                           n_steps=sizes.ig_steps, max_length=models.max_length)}
    for cond in STUDENTS:
        if cond in models.students:
            out[f"bilstm/{cond}"] = integrated_gradients(
                models.students[cond], models.tokenizer, list(sentences),
                n_steps=sizes.ig_steps, max_length=models.max_length)
    return out


# ----------------------------------------------------------------------------- 3. reasons

def compare_reasons(attributions: dict[str, list], seed: int = 0, n_boot: int = 2000) -> dict:
    """Spearman correlation of each student's token attributions with the teacher's, on the
    sentences where both predict the same class, and the paired ``kd - hard`` difference."""
    from ktlab.explain import rank_correlation, top_k_overlap
    teacher = attributions["teacher"]
    out: dict[str, Any] = {}
    per_sentence: dict[str, np.ndarray] = {}
    for name, attrs in attributions.items():
        if name == "teacher":
            continue
        rho = np.array([rank_correlation(t, s) if t.predicted == s.predicted else np.nan
                        for t, s in zip(teacher, attrs)])
        overlap = np.array([top_k_overlap(t, s, 3) if t.predicted == s.predicted else np.nan
                            for t, s in zip(teacher, attrs)])
        per_sentence[name] = rho
        ok = ~np.isnan(rho)
        out[name] = {"mean_spearman": _r(np.mean(rho[ok])), "median_spearman": _r(np.median(rho[ok])),
                     "ci95": _boot_ci(rho[ok], seed, n_boot), "sentences": int(ok.sum()),
                     "top3_overlap": _r(np.nanmean(overlap))}
    if {"bilstm/kd", "bilstm/hard"} <= set(per_sentence):
        d = per_sentence["bilstm/kd"] - per_sentence["bilstm/hard"]
        d = d[~np.isnan(d)]
        ci = _boot_ci(d, seed, n_boot)
        out["kd_minus_hard"] = {"mean": _r(np.mean(d)), "ci95": ci, "sentences": int(len(d)),
                                "verdict": ("kd closer to the teacher" if ci[0] > 0 else
                                            "hard closer to the teacher" if ci[1] < 0 else
                                            "no measurable difference")}
    return out


def _r(x: float) -> float:
    return round(float(x), 4)


def _boot_ci(values: np.ndarray, seed: int, n_boot: int) -> list[float]:
    """Percentile bootstrap 95% interval of the mean over sentences."""
    if len(values) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return [_r(np.percentile(means, 2.5)), _r(np.percentile(means, 97.5))]


# ----------------------------------------------------------------------------- 4. attention

def attention_agreement(models: serving.ServingModels, sentences: Sequence[str],
                        teacher_attributions: list) -> dict:
    """Rank correlation between the attention each token receives (last layer, mean over heads
    and queries) and the magnitude of its integrated gradient, on the teacher."""
    from ktlab.explain import attention_scores, attention_vs_gradients
    att = attention_scores(models.teacher, models.tokenizer, list(sentences),
                           max_length=models.max_length)
    return {"scores": att, **attention_vs_gradients(att, teacher_attributions)}


# ----------------------------------------------------------------------------- 5. deletion

def faithfulness(models: serving.ServingModels, sentences: Sequence[str], labels: Sequence[int],
                 attributions: dict[str, list], sizes: ExplainSizes, seed: int = 0) -> dict:
    """The deletion test for every model: delete its top-k attributed tokens vs k random ones."""
    from ktlab.explain import deletion_test
    out = {}
    for name, attrs in attributions.items():
        model = models.teacher if name == "teacher" else models.students[name.split("/")[1]]
        out[name] = deletion_test(model, models.tokenizer, list(sentences), list(labels), attrs,
                                  ks=sizes.deletion_ks, seed=seed, max_length=models.max_length)
    return out


# ----------------------------------------------------------------------------- 6. LIME

def lime_beside_ig(models: serving.ServingModels, sentence: str, sizes: ExplainSizes,
                   names: Sequence[str] = ("teacher", "bilstm/kd"), seed: int = 0) -> dict:
    """LIME's word weights next to integrated gradients summed to words, for one sentence."""
    from ktlab.explain import integrated_gradients, lime_explanation, predict_proba_fn, word_level
    out = {}
    for name in names:
        model = models.teacher if name == "teacher" else models.students[name.split("/")[1]]
        ig = integrated_gradients(model, models.tokenizer, [sentence], n_steps=sizes.ig_steps,
                                  max_length=models.max_length)[0]
        proba = predict_proba_fn(model, models.tokenizer, max_length=models.max_length)
        lime = lime_explanation(proba, sentence, ig.predicted, num_features=len(sentence.split()),
                                num_samples=sizes.lime_samples, seed=seed)
        ig_words = word_level(ig)
        weights = dict(lime)
        lime_by_word = [weights.get(w, 0.0) for w, _ in ig_words]
        from scipy.stats import spearmanr
        rho = float(spearmanr([s for _, s in ig_words], lime_by_word).statistic) \
            if len(ig_words) >= 3 else float("nan")
        out[name] = {"predicted": ig.predicted, "prob": round(ig.prob, 4),
                     "ig_words": [(w, round(s, 4)) for w, s in ig_words],
                     "lime_words": [(w, round(s, 4)) for w, s in lime],
                     "spearman_ig_lime": _r(rho), "attribution": ig}
    return out


# ----------------------------------------------------------------------------- 7. perturbations

def perturbed_sets(sentences: Sequence[str], sizes: ExplainSizes, seed: int,
                   data_dir: Optional[Path] = None) -> dict[str, list[str]]:
    """The dev set and its three perturbed copies: character typos, same-POS word swaps (POS
    from CoNLL-2003 train, :mod:`ktlab.augment`), dropped words."""
    from ktlab import augment, robustness
    from ktlab.data import load_conll
    lookup = augment.build_pos_lookup(load_conll("train", data_dir))
    sets = {"clean": list(sentences)}
    for kind in robustness.PERTURBATIONS:
        sets[kind] = robustness.perturb_dev(list(sentences), kind, p=sizes.perturb_p, seed=seed,
                                            lookup=lookup)
    return sets


# ----------------------------------------------------------------------------- 8. FGM

@dataclasses.dataclass
class TrainingData:
    """The labelled SST-2 sentences of the serving run, encoded, with the teacher's logits."""

    train_items: list
    dev_items: list
    fgm_teacher_items: list
    sizes: Any                      #: the serving run's :class:`ClassifySizes`
    pad_id: int


def training_data(models: serving.ServingModels, sizes: ExplainSizes) -> TrainingData:
    """The serving run's training sentences (same subset, same order) with the cached teacher
    logits (read back from the run's cache: no new teacher pass), and the FGM teachers' subset."""
    from ktlab.data import subset
    from ktlab.experiments import classify
    res = models.results
    from ktlab import config as kconfig
    csizes = classify.ClassifySizes(**res["sizes"])
    data = classify.load_data(csizes, res["seed"], kconfig.load(None, verbose=False).data_dir)
    pad_id = models.tokenizer.pad_token_id or 0
    train_items = classify.encode(models.tokenizer, data["train"]["sentence"],
                                  data["train"]["label"], csizes.max_length)
    work = models.run_dir / "cache" / res["cache_key"]
    logits = classify.cache_logits(models.teacher, train_items, work / "logits.pt", pad_id,
                                   save_every=csizes.save_every)
    for item, row in zip(train_items, logits):
        item["teacher_logits"] = row
    sub = subset(data["train"], sizes.fgm_teacher_train, res["seed"] + sizes.seed_offset,
                 stratify_by="label")
    fgm_items = classify.encode(models.tokenizer, sub["sentence"], sub["label"],
                                csizes.max_length)
    dev_items = classify.encode(models.tokenizer, models.dev_sentences, models.dev_labels,
                                csizes.max_length)
    return TrainingData(train_items, dev_items, fgm_items, csizes, pad_id)


def train_fgm_teachers(models: serving.ServingModels, data: TrainingData, sizes: ExplainSizes,
                       work: Path, log: Callable[[str], None] = print) -> dict:
    """Two teachers fine-tuned from the pretrained MiniLM on the same sentences with the serving
    recipe: one plain, one with FGM on the word embeddings. Resumable, cached under ``work``.
    On the serving teacher's whole training set the plain one is the serving teacher itself."""
    from ktlab.experiments import classify
    from ktlab.robustness import fgm_loss
    res = models.results
    tsizes = dataclasses.replace(data.sizes, teacher_train=sizes.fgm_teacher_train,
                                 teacher_evals=1)
    out = {}
    whole = sizes.fgm_teacher_train is None or sizes.fgm_teacher_train >= len(data.train_items)
    for name, loss in (("plain", classify.hard_label_loss),
                       ("fgm", fgm_loss(classify.hard_label_loss, sizes.fgm_teacher_epsilon))):
        if name == "plain" and whole and res["sizes"]["teacher_train"] is None:
            # the same sentences, order, seed and recipe as the serving teacher: it is the plain one
            out[f"teacher ({name}, {len(data.fgm_teacher_items)})"] = models.teacher.eval()
            continue
        teacher = classify.build_teacher(res["teacher_name"], len(models.label_names), res["seed"])
        t0 = time.perf_counter()
        history = classify.fine_tune_teacher(teacher, data.fgm_teacher_items, None, tsizes,
                                             res["seed"], work / f"teacher-{name}", data.pad_id,
                                             loss_fn=loss)
        out[f"teacher ({name}, {len(data.fgm_teacher_items)})"] = teacher.eval()
        log(f"[explain] teacher {name} on {len(data.fgm_teacher_items)} sentences: "
            f"{history['train_seconds']:.0f} s ({time.perf_counter() - t0:.0f} s here)")
    return out


def train_fgm_student(models: serving.ServingModels, data: TrainingData, sizes: ExplainSizes,
                      work: Path, log: Callable[[str], None] = print) -> torch.nn.Module:
    """The ``kd`` BiLSTM again, with FGM on its embeddings: same data, steps and seed."""
    from ktlab.experiments import classify
    from ktlab.robustness import fgm_loss
    res = models.results
    cond = classify.CONDITIONS["kd"]
    model = classify.build_student("bilstm", cond, models.teacher, len(models.tokenizer),
                                   len(models.label_names), data.pad_id, res["seed"])
    history = classify.train_student(model, "bilstm", cond, data.train_items, [], data.sizes,
                                     res["seed"], work / "bilstm-kd-fgm", data.pad_id,
                                     loss_fn=fgm_loss(classify.make_distill_loss(),
                                                      sizes.fgm_epsilon))
    log(f"[explain] bilstm/kd+fgm: {history['train_seconds']:.0f} s")
    return model.eval()


# ----------------------------------------------------------------------------- 9. robustness

def robustness_table(named_models: dict[str, torch.nn.Module], sets: dict[str, list[str]],
                     labels: Sequence[int], tokenizer: Any, max_length: int) -> dict:
    """Accuracy of every model on the clean and every perturbed dev set, the drop in points
    with McNemar's exact test (clean vs perturbed, same sentences)."""
    from ktlab.experiments import classify
    from ktlab.metrics import accuracy_interval, mcnemar_test, verdict
    pad = tokenizer.pad_token_id or 0
    encoded = {k: classify.encode(tokenizer, s, labels, max_length) for k, s in sets.items()}
    out = {}
    for name, model in named_models.items():
        preds = {k: classify.predict(model, items, pad).argmax(-1).tolist()
                 for k, items in encoded.items()}
        row: dict[str, Any] = {"predictions": preds}
        for kind, p in preds.items():
            ci = accuracy_interval([a == y for a, y in zip(p, labels)])
            row[kind] = {"accuracy": _r(ci["accuracy"]), "ci95": [_r(ci["low"]), _r(ci["high"])]}
            if kind != "clean":
                test = mcnemar_test(preds["clean"], p, labels)
                row[kind].update(drop_points=round(100 * test["difference"], 2),
                                 p_value=round(test["p_value"], 5), verdict=verdict(test))
        out[name] = row
    return out


def drop_change(table: dict, plain: str, adversarial: str, labels: Sequence[int],
                seed: int = 0, n_boot: int = 2000) -> dict:
    """Does adversarial training narrow the drop? Per perturbation: (plain drop) - (FGM drop) in
    points, with a paired bootstrap interval over sentences (> 0: FGM drops less)."""
    y = np.asarray(labels)
    out = {}
    for kind in [k for k in table[plain]["predictions"] if k != "clean"]:
        def per_sentence_drop(name: str) -> np.ndarray:
            p = table[name]["predictions"]
            return ((np.asarray(p["clean"]) == y).astype(float)
                    - (np.asarray(p[kind]) == y).astype(float))
        d = 100 * (per_sentence_drop(plain) - per_sentence_drop(adversarial))
        ci = _boot_ci(d, seed, n_boot)
        out[kind] = {"narrowed_by_points": _r(d.mean()), "ci95": ci,
                     "verdict": ("FGM drops less" if ci[0] > 0 else "FGM drops more"
                                 if ci[1] < 0 else "no measurable difference")}
    return out


# ----------------------------------------------------------------------------- results

def markdown_table(results: dict) -> str:
    """Clean and perturbed accuracy per model, with the drops."""
    kinds = [k for k in results["robustness"][next(iter(results["robustness"]))]
             if k not in ("predictions", "clean")]
    head = ("| model | clean (%) | " + " | ".join(f"{k} (%, drop)" for k in kinds) + " |\n"
            "|---|---|" + "---|" * len(kinds))
    rows = []
    for name, row in results["robustness"].items():
        cells = [f"{100 * row[k]['accuracy']:.1f} ({row[k]['drop_points']:+.1f})" for k in kinds]
        rows.append(f"| {name} | {100 * row['clean']['accuracy']:.1f} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows)


def write_results(results: dict, out: Path) -> None:
    common.write_results(results, out, markdown_table(results), {}, plots=False)


def load_results(path: str | Path) -> dict:
    return common.load_results(path, SCHEMA, "explain")


def _plain(attr: Any) -> dict:
    return {"tokens": attr.tokens, "scores": [round(s, 5) for s in attr.scores],
            "predicted": attr.predicted, "target": attr.target, "prob": round(attr.prob, 4),
            "delta": round(attr.delta, 5)}


def run(profile: Optional[str] = None, out_dir: str | Path = "runs/explain",
        models_dir: Optional[str | Path] = None, teacher: Optional[str] = None,
        seed: Optional[int] = None, sizes: Optional[ExplainSizes] = None,
        log: Callable[[str], None] = print, max_examples: Optional[int] = None,
        max_steps: Optional[int] = None) -> dict:
    """Stages 1-9; writes ``results.json`` and ``table.md`` under ``out_dir``.

    ``models_dir`` (default ``<out_dir>/models``) holds the trained serving models; pointing it
    at the deploy run's folder reuses them."""
    from ktlab import config as kconfig
    cfg = kconfig.load(profile, teacher=teacher, seed=seed, verbose=False)
    sizes = sizes or PROFILE_SIZES[cfg.profile]
    if max_examples:
        sizes = dataclasses.replace(sizes, ig_sentences=min(max_examples, sizes.ig_sentences
                                                            or max_examples),
                                    fgm_teacher_train=min(max_examples, sizes.fgm_teacher_train
                                                          or max_examples),
                                    ig_steps=min(sizes.ig_steps, 4),
                                    lime_samples=min(sizes.lime_samples, 50))
    out = Path(out_dir)
    models_dir = Path(models_dir) if models_dir else out / "models"
    started, cpu_started = time.time(), time.process_time()
    timings: dict[str, float] = {}
    log(f"[explain] {cfg.summary()} models={models_dir} out={out}")

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"[explain] {name}: {timings[name]:.0f} s")
        return value

    models = stage("models", lambda: serving.train_or_load(
        cfg.profile, models_dir, teacher, seed, max_examples, max_steps, log=log))
    n = sizes.ig_sentences or len(models.dev_sentences)
    sentences, labels = models.dev_sentences[:n], models.dev_labels[:n]
    attributions = stage("integrated_gradients", lambda: attribute_all(models, sentences, sizes))
    reasons = compare_reasons(attributions, cfg.seed)
    attention = stage("attention", lambda: attention_agreement(models, sentences,
                                                               attributions["teacher"]))
    deletion = stage("deletion", lambda: faithfulness(models, sentences, labels, attributions,
                                                      sizes, cfg.seed))
    example = next((s for s in sentences if 6 <= len(s.split()) <= 14), sentences[0])
    lime = stage("lime", lambda: lime_beside_ig(models, example, sizes, seed=cfg.seed))
    sets = stage("perturb", lambda: perturbed_sets(models.dev_sentences, sizes, cfg.seed,
                                                   cfg.data_dir))
    data = stage("training_data", lambda: training_data(models, sizes))
    work = out / "cache" / common.cache_key(models=models.results["cache_key"],
                                            sizes=dataclasses.asdict(sizes), schema=SCHEMA)
    fgm_teachers = stage("fgm_teachers", lambda: train_fgm_teachers(models, data, sizes, work, log))
    fgm_student = stage("fgm_student", lambda: train_fgm_student(models, data, sizes, work, log))
    named = {"teacher": models.teacher, **fgm_teachers,
             **{f"bilstm/{c}": models.students[c] for c in STUDENTS if c in models.students},
             "bilstm/kd+fgm": fgm_student}
    table = stage("robustness", lambda: robustness_table(named, sets, models.dev_labels,
                                                         models.tokenizer, models.max_length))
    plain_t, fgm_t = list(fgm_teachers)
    results = {
        "schema": SCHEMA, "profile": cfg.profile, "teacher_name": models.results["teacher_name"],
        "models_dir": str(models_dir), "sizes": dataclasses.asdict(sizes),
        "machine": common.describe_machine(), **common.run_clock(started, cpu_started, timings),
        "ig_sentences": n, "fgm_teacher_train": len(data.fgm_teacher_items),
        "student_train": len(data.train_items),
        "reasons": reasons,
        "attention_vs_ig": {k: v for k, v in attention.items() if k != "scores"},
        "deletion": deletion,
        "lime": {k: {kk: vv for kk, vv in v.items() if kk != "attribution"}
                 for k, v in lime.items()},
        "lime_sentence": example,
        "convergence_delta": {k: _r(np.mean([abs(a.delta) for a in v]))
                              for k, v in attributions.items()},
        "examples": {k: [_plain(a) for a in v[:8]] for k, v in attributions.items()},
        "perturbed_examples": {k: v[:8] for k, v in sets.items()},
        "robustness": table,
        "fgm": {"teacher": drop_change(table, plain_t, fgm_t, models.dev_labels, cfg.seed),
                "student": drop_change(table, "bilstm/kd", "bilstm/kd+fgm", models.dev_labels,
                                       cfg.seed),
                "plain_teacher": plain_t, "fgm_teacher": fgm_t},
    }
    for row in results["robustness"].values():
        row.pop("predictions")
    write_results(results, out)
    log(markdown_table(results))
    log(f"[explain] wrote {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results
