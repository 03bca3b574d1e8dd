"""Write notebooks/08_deployment.ipynb and notebooks/09_interpretability_and_robustness.ipynb
from the cell sources below (then execute them with ``jupyter nbconvert --execute --inplace``).

Kept in the repository so a change to a notebook's text is a reviewable diff of Python strings;
the committed .ipynb files (with their quick-profile outputs) are what students open.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip("\n"))


NB08 = [
    md(r"""
# 08 · Deployment: quantising, exporting and timing the teacher and its student

**What you will learn**
- what dynamic int8 quantisation does to one weight matrix (scale, zero point, rounding error), and why a model whose parameters sit mostly in its embedding table shrinks far less than 4×;
- how to export the fine-tuned teacher and the best BiLSTM student to ONNX, check that onnxruntime computes the same logits as PyTorch (within 1e-4), and quantise the ONNX graph;
- how to package a model as a self-contained folder (model, tokenizer, labels, a manifest with sha256) that `ktlab predict` serves without ktlab's training code;
- how to measure latency so that the numbers mean something: warm-up excluded, percentiles not means, tokenisation counted or not (and said which), one process per variant for memory, the same threads for everyone.

Distillation is done to serve a model faster; "the small model is not faster in practice" is what users report when latency is measured wrongly. This notebook measures it right, on the models of notebook 04.
"""),
    code(r"""
import ktlab
cfg = ktlab.config.load()            # ktlab.config.load("full") on a GPU machine: bert-base-uncased teacher
"""),
    code(r"""
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

from ktlab.deploy import measure, quantize                 # int8 arithmetic, honest timing
from ktlab.deploy.bundle import BUNDLE_FORMAT, BundleError, export_bundle
from ktlab.deploy.runtime import Predictor                 # the serving side: no torch inside
from ktlab.experiments import deploy, serving              # the experiment's stages

torch.set_num_threads(2)
notebook_started = time.time()
"""),
    md(r"""
## 1. The models to serve

`serving.train_or_load` trains, with the sentiment pipeline of notebook 04 (`ktlab.experiments.classify`), the MiniLM teacher fine-tuned on SST-2 and three BiLSTM students — `hard` (gold labels), `hard+pca` (the teacher's embedding table, PCA-projected and frozen: the best BiLSTM of the sentiment bench) and `kd` (the teacher's logits) — or reads them back from the folder's cache. In the quick profile they see 2,000 training sentences, so their accuracies are lower than the bench's (section 6 shows those).
"""),
    code(r"""
models = serving.train_or_load(cfg.profile, "runs/serving-quick" if cfg.profile == "quick" else f"runs/serving-{cfg.profile}",
                               log=lambda line: None)
student_name = f"bilstm/{models.best_student}"
student = models.students[models.best_student]
teacher = models.teacher
run = models.results
print(f"teacher {run['teacher_name']}: dev accuracy {100 * run['teacher']['dev_accuracy']:.1f}% "
      f"({run['data']['teacher_train']} training sentences)")
for r in run["students"]:
    print(f"{r['name']:<16} dev accuracy {100 * r['dev_accuracy']:.1f}%")
print(f"served student: {student_name} (the most accurate BiLSTM here); max length {models.max_length} tokens")
"""),
    md(r"""
## 2. Dynamic int8 quantisation, by hand

`torch.ao.quantization.quantize_dynamic` replaces every `nn.Linear` (and `nn.LSTM`) by a version that stores its weight matrix $W$ as 8-bit integers $q$ with one scale $s$ per matrix (symmetric: zero point 0):

$$s = \frac{\max |W|}{127.5}, \qquad q = \mathrm{clamp}\big(\mathrm{round}(W / s), -128, 127\big), \qquad \hat W = s\, q .$$

The activations are quantised *on the fly* at each call ("dynamic": no calibration data needed), the matrix product runs in int8, and the result is scaled back to fp32. Below, the rule applied by hand to one feed-forward matrix of the fine-tuned teacher, compared with what torch stored:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
name = "bert.encoder.layer.0.intermediate.dense"
linear = teacher.get_submodule(name)
W = linear.weight.detach()
scale = W.abs().max() / 127.5
q_by_hand = torch.round(W / scale).clamp(-128, 127).to(torch.int8)

teacher_int8 = quantize.quantize_int8(teacher)
stored = teacher_int8.get_submodule(name).weight()       # the quantised tensor torch keeps
same = (q_by_hand == stored.int_repr()).float().mean().item()
error = (stored.dequantize() - W).abs()
print(f"{name}: W {tuple(W.shape)}, max|W| = {W.abs().max():.4f}")
print(f"scale by hand {scale:.6g} vs torch {stored.q_scale():.6g}; zero point {stored.q_zero_point()}")
print(f"int8 values identical to torch's: {100 * same:.3f}% (the rest are rounding ties, off by one)")
print(f"reconstruction error: mean {error.mean():.2e}, max {error.max():.2e} (at most s / 2 = {scale / 2:.2e})")
assert same > 0.999 and error.max() <= scale / 2 + 1e-7
"""),
    md(r"""
What does that save? One byte per weight instead of four — but only for the matrices that are quantised. Embedding tables, LayerNorm weights and biases stay fp32. `quantize.int8_size_estimate` does the arithmetic; `quantize.state_bytes` measures the saved state dict (what `torch.save` writes):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
sizes_rows = []
for label, fp32_model in (("teacher", teacher), (student_name, student)):
    est = quantize.int8_size_estimate(fp32_model)
    measured_fp32 = quantize.state_bytes(fp32_model)
    measured_int8 = quantize.state_bytes(quantize.quantize_int8(fp32_model))
    total = est["quantised_params"] + est["kept_fp32_params"]
    sizes_rows.append({"model": label, "parameters": total,
                       "quantised (%)": round(100 * est["quantised_params"] / total, 1),
                       "fp32 MiB (estimate / saved)": f"{est['fp32_bytes'] / 2**20:.1f} / {measured_fp32 / 2**20:.1f}",
                       "int8 MiB (estimate / saved)": f"{est['int8_bytes'] / 2**20:.1f} / {measured_int8 / 2**20:.1f}",
                       "shrinks": f"{measured_fp32 / measured_int8:.2f}x"})
display(pd.DataFrame(sizes_rows))
emb = teacher.get_input_embeddings().weight
print(f"the word-embedding table alone: {emb.shape[0]:,} x {emb.shape[1]} = {emb.numel():,} fp32 numbers "
      f"({emb.numel() * 4 / 2**20:.1f} MiB), not quantised by quantize_dynamic")
"""),
    md(r"""
Both models shrink far less than 4×. The teacher's 30,522 × 384 word-embedding table is about half of its parameters; the `hard+pca` student *reads* that same frozen table through a 384 → 300 projection, so the table is almost all of the student, and its LSTM and MLP — the parts int8 applies to — are small. The lever for the student's size is the table (prune rare WordPiece rows, or store it in fp16 / int8 with an embedding-specific scheme), not `quantize_dynamic`.

## 3. The experiment, stage by stage

`deploy.run` (what `ktlab run deploy` calls) is the composition of these stages:

| stage | function |
|---|---|
| 1. the trained models | `serving.train_or_load` (section 1) |
| 2. four variants per model | `deploy.build_variants`: PyTorch fp32, PyTorch int8, ONNX fp32, ONNX int8 |
| 3. ONNX equals PyTorch | `deploy.onnx_parity` |
| 4. every variant measured in its own process | `deploy.measure_variants` (`ktlab.deploy.measure.run_isolated`) |
| 5. the goals and the table | `deploy.goals`, `deploy.markdown_table` |

### Stage 2 — the variants: `build_variants`

The PyTorch variants are the modules themselves (pickled with `torch.save(module)`); the ONNX variants are **bundles** written by `ktlab.deploy.bundle.export_bundle`: `torch.onnx.export` of the model with dynamic batch and sequence axes, `onnxruntime.quantization.quantize_dynamic` for int8, the tokenizer's `tokenizer.json`, the label names and a manifest.
"""),
    code(r"""
out = Path(f"runs/deploy-{cfg.profile}")
work = out / "cache" / "variants"
sizes = deploy.PROFILE_SIZES[cfg.profile]
print(sizes)
t0 = time.perf_counter()
variants = deploy.build_variants(models, work)
export_seconds = time.perf_counter() - t0
for v in variants:
    print(f"{v.label:<26} {v.kind:<5} {v.weight_bytes / 2**20:7.1f} MiB  {v.path.name}")
print(f"built {len(variants)} variants in {export_seconds:.0f} s")
"""),
    md(r"""
A bundle is everything a server needs and nothing else. The manifest records the format, the ktlab version, the maximum length, the labels and a sha256 per file, so that a folder from another version, a missing file or an edited model is refused with a message instead of serving wrong answers:
"""),
    code(r"""
bundle = next(v.path for v in variants if v.model == student_name and v.name == "onnx-int8")
manifest = json.loads((bundle / "manifest.json").read_text())
print(f"{bundle.name}/:", ", ".join(f"{f} ({info['bytes'] / 2**20:.2f} MiB)" for f, info in manifest["files"].items()))
print(f"format {manifest['format']}, ktlab {manifest['ktlab_version']}, max_length {manifest['max_length']}, labels {manifest['labels']}")
print("model:", manifest["model"])
"""),
    md(r"""
### Stage 3 — does ONNX compute what PyTorch computes? `onnx_parity`

The fp32 ONNX graph must give the same logits as the PyTorch model, on padded batches too (the BiLSTM must ignore its padding in ONNX as it does in PyTorch). `onnx_parity` feeds every dev sentence through both, in batches of 32, and reports the largest absolute difference.
"""),
    code(r"""
t0 = time.perf_counter()
parity = deploy.onnx_parity(models, variants, models.dev_sentences)
for name, p in parity.items():
    print(f"{name:<16} max |ONNX - PyTorch| = {p['max_abs_logit_difference']:.2e} over {p['sentences']} dev sentences")
assert all(p["within_1e-4"] for p in parity.values()), "ONNX fp32 must equal PyTorch within 1e-4"
print(f"checked in {time.perf_counter() - t0:.0f} s")
"""),
    md(r"""
### Serving a bundle: `Predictor` and `ktlab predict`

`ktlab.deploy.runtime` imports numpy, onnxruntime and tokenizers — no torch, no transformers, no training code — so a server, or a student's laptop, needs a few tens of MB of libraries. Texts longer than the model's maximum length are cut, and the output says so (`"truncated": true`); `--strict` turns that into an error.
"""),
    code(r"""
predictor = Predictor.load(bundle, threads=1)
long_text = " ".join(["a thoroughly enjoyable , well acted film ."] * 12)
for row in predictor.predict(["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés .", long_text]):
    print(f"{row['label']} p={max(row['probs'].values()):.3f} tokens={len(row['tokens']):<3} truncated={row['truncated']}  {row['text'][:60]}")
"""),
    code(r"""
ktlab_cli = [sys.executable, "-m", "ktlab.cli"]
done = subprocess.run(ktlab_cli + ["predict", str(bundle)], input="an utterly charming film .\nboring and far too long .\n",
                      capture_output=True, text=True, timeout=120)
print("$ printf 'an utterly charming film .\\nboring and far too long .\\n' | ktlab predict", bundle)
print(done.stdout.strip() or done.stderr)
"""),
    md(r"""
And the refusals: an edited model file, a folder from another ktlab version, a missing tokenizer — each named, with the fix.
"""),
    code(r"""
import shutil, tempfile
broken_root = Path(tempfile.mkdtemp())
def broken_copy(change):
    folder = broken_root / f"case{len(list(broken_root.iterdir()))}"
    shutil.copytree(bundle, folder)
    change(folder)
    try:
        Predictor.load(folder)
        return "loaded (should not happen)"
    except BundleError as err:
        return str(err)

def other_version(folder):
    m = json.loads((folder / "manifest.json").read_text()); m["ktlab_version"] = "0.0.1"
    (folder / "manifest.json").write_text(json.dumps(m))

for what, change in (("edited model", lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:-16] + b"0" * 16)),
                     ("other version", other_version),
                     ("missing file", lambda f: (f / "tokenizer.json").unlink())):
    print(f"{what:<14} -> {broken_copy(change)}")
shutil.rmtree(broken_root)
"""),
    md(r"""
### Stage 4 — measuring each variant in its own process: `measure_variants`

What `ktlab.deploy.measure.measure_variant` does for each variant, in a fresh Python process started by `run_isolated`:

1. load the variant (and time the load); tokenise every dev sentence once;
2. **accuracy** on the dev set and **agreement** (same argmax) with the fp32 PyTorch model of the same network;
3. **batch-1 latency**, model only: ids prepared in advance, `warmup` untimed calls, then one call per sentence; p50 and p95 of those times;
4. **batch-1 latency, end to end**: text in, label out, the tokeniser included;
5. **throughput** at batch 32, length-sorted batches (as a server that groups requests by length), tokenisation excluded;
6. **peak RSS** of the process: possible only because the process holds nothing else.

Every variant uses the same number of threads (`sizes.threads`), since a comparison at different thread counts measures the threads.
"""),
    code(r"""
t0 = time.perf_counter()
records = deploy.measure_variants(variants, models, work, sizes, log=lambda line: None)
measure_seconds = time.perf_counter() - t0
print(f"measured {len(records)} variants in {measure_seconds:.0f} s ({sizes.latency_sentences} sentences timed one by one, "
      f"{len(models.dev_sentences)} scored, {sizes.threads} threads)")
"""),
    md(r"""
### Stage 5 — the table and the goals: `markdown_table`, `goals`
"""),
    code(r"""
results = {"variants": records}
display(Markdown(deploy.markdown_table(results)))
goals = deploy.goals(records, student_name)
for key, g in goals.items():
    numbers = ", ".join(f"{k} {v}" for k, v in g.items() if k not in ("goal", "met"))
    print(f"{'met    ' if g['met'] else 'NOT met'}  {g['goal']}: {numbers}")
"""),
    md(r"""
Read the table row by row:
- **int8 PyTorch** trades accuracy for speed inside the same framework; its agreement column says how many dev predictions it changed.
- **ONNX fp32** is the same arithmetic as PyTorch (parity above) run by onnxruntime's fused kernels: any speed difference is the runtime, not the model.
- The **end-to-end** latency adds the WordPiece tokeniser. For the teacher it is a small share; for the BiLSTM it can be as large as the model itself — a speed-up quoted without saying whether tokenisation is included is not a number.
- **Peak RSS** includes the Python interpreter and the runtime library (torch alone is a few hundred MB; onnxruntime much less): for a small model the framework, not the weights, sets the memory floor.

## 4. How latency is measured wrongly

Three mistakes, each shown on the served student in this process:
"""),
    code(r"""
pt_student = student.eval()
ids, mask, _ = predictor.encode(models.dev_sentences[:50])
singles = [predictor.encode([s])[:2] for s in models.dev_sentences[:50]]

def torch_call(pair):
    with torch.inference_mode():
        return pt_student(input_ids=torch.from_numpy(pair[0]), attention_mask=torch.from_numpy(pair[1]))

fresh = quantize.quantize_int8(student)            # a model never called before
def cold_call(pair):
    with torch.inference_mode():
        return fresh(input_ids=torch.from_numpy(pair[0]), attention_mask=torch.from_numpy(pair[1]))

no_warmup = measure.time_latency(cold_call, singles, warmup=0)
warm = measure.time_latency(cold_call, singles, warmup=10)
print(f"1. no warm-up: mean {no_warmup['mean_ms']:.2f} ms, p95 {no_warmup['p95_ms']:.2f} ms; "
      f"with 10 warm-up calls: mean {warm['mean_ms']:.2f} ms, p95 {warm['p95_ms']:.2f} ms")

tok_only = measure.time_latency(lambda s: predictor.encode([s]), models.dev_sentences[:50], warmup=5)
model_only = measure.time_latency(torch_call, singles, warmup=5)
print(f"2. tokenising one sentence: p50 {tok_only['p50_ms']:.3f} ms vs the BiLSTM's forward pass p50 {model_only['p50_ms']:.3f} ms: "
      f"tokenisation is {100 * tok_only['p50_ms'] / (tok_only['p50_ms'] + model_only['p50_ms']):.0f}% of end-to-end")

by_threads = {}
for n in (1, 2):
    torch.set_num_threads(n)
    by_threads[n] = measure.time_latency(torch_call, singles, warmup=5)["p50_ms"]
torch.set_num_threads(2)
print(f"3. threads: BiLSTM batch-1 p50 {by_threads[1]:.2f} ms on 1 thread, {by_threads[2]:.2f} ms on 2 "
      "(a tiny model gains little from a second thread, and on a shared machine it can lose)")
"""),
    md(r"""
The first call of a model allocates buffers and picks kernels; a mean that includes it describes the first request, not the service. Percentiles (p50 for the typical request, p95 for the slow tail a user notices) are robust to a few outliers that a mean is not.

## 5. Try it from the command line

The experiment and the export are also commands (run from the repository root):

```
ktlab run deploy --profile quick --out runs/deploy-quick          # this notebook's stages, ~3 min
ktlab export runs/deploy-quick/models --format onnx --int8 --out served/   # the best BiLSTM as a bundle
ktlab predict served/ "a gorgeous , witty , seductive movie ."
cat reviews.txt | ktlab predict served/ > predictions.jsonl
```

## 6. The CPU bench (from `results/deploy-bench/`)

`ktlab run deploy --profile bench --models results/serving-bench --out results/deploy-bench` serves the models trained on all 67,349 SST-2 sentences (the recipe of the sentiment bench, without its augmented transfer set) and times 500 sentences one by one. This cell reads its results:
"""),
    code(r"""
root = Path("..") if Path("../results").is_dir() else Path(".")
bench_dir = root / "results" / "deploy-bench"
bench = deploy.load_results(bench_dir) if (bench_dir / "results.json").is_file() else None
if bench is None:
    print(f"no bench results in {bench_dir} yet: from the repository root run\n"
          "  ktlab run deploy --profile bench --models results/serving-bench --out results/deploy-bench")
else:
    m = bench["machine"]
    print(f"bench: {bench['dev_sentences']} dev sentences, {bench['sizes']['latency_sentences']} timed one by one, "
          f"{bench['sizes']['threads']} threads, {m.get('cpu_model', m['processor'])}; student {bench['student']}")
    display(Markdown(deploy.markdown_table(bench)))
    for key, g in bench["goals"].items():
        numbers = ", ".join(f"{k} {v}" for k, v in g.items() if k not in ("goal", "met"))
        print(f"{'met    ' if g['met'] else 'NOT met'}  {g['goal']}: {numbers}")
"""),
    md(r"""
## What we measured
"""),
    code(r"""
def row(model, variant):
    return next(r for r in records if r["model"] == model and r["variant"] == variant)
t32, s32, s8 = row("teacher", "torch-fp32"), row(student_name, "torch-fp32"), row(student_name, "onnx-int8")
print(f"quick profile: teacher {100 * t32['accuracy']:.1f}% and {student_name} {100 * s32['accuracy']:.1f}% on {len(models.dev_sentences)} SST-2 dev sentences")
print(f"ONNX fp32 vs PyTorch max |logit diff|: " + ", ".join(f"{k} {v['max_abs_logit_difference']:.1e}" for k, v in parity.items()))
print(f"{student_name} int8 ONNX: {100 * s8['accuracy']:.1f}% ({100 * s8['agreement']:.1f}% agreement with fp32), "
      f"batch-1 p50 {s8['latency_model']['p50_ms']:.2f} ms vs the fp32 PyTorch teacher's {t32['latency_model']['p50_ms']:.2f} ms")
for key, g in goals.items():
    print(f"goal {key}: {'met' if g['met'] else 'not met'}")
print(f"notebook compute time: {time.time() - notebook_started:.0f} s")
"""),
    md(r"""
## Try this

- Exercises (graded, `exercises/08_deployment.ipynb`): the int8 size arithmetic of a model (`08.int8_size`) and latency percentiles with the warm-up removed (`08.latency_percentiles`).
- **Static vs dynamic**: ONNX's `quantize_static` needs calibration sentences. Does it beat `quantize_dynamic` on the teacher's latency, and at what cost in agreement?
- **Shrink the table**: keep only the WordPiece rows that SST-2's training sentences use (`models.tokenizer` over the train split) and re-export the student. How many MiB are left, and how many dev predictions change?
- **Threads**: rerun stage 4 with `dataclasses.replace(sizes, threads=1)`. Which variants get slower, which faster?
- **Longer inputs**: time the teacher at 16, 64 and 256 tokens. Self-attention is quadratic in length; the BiLSTM is linear. Where do the curves cross?
"""),
]

NB09 = [
    md(r"""
# 09 · Interpretability and robustness: does the student learn the teacher's reasons?

**What you will learn**
- integrated gradients (Sundararajan et al. 2017) on the word embeddings: which tokens push a prediction, for the teacher and for its BiLSTM students on the same dev sentences, drawn as coloured text, and the completeness check that tells you the path integral was computed finely enough;
- whether distillation transfers the *reasons* and not only the labels: the rank correlation between teacher and student attributions, for the distilled (`kd`) student against the one trained on gold labels (`hard`);
- whether attention weights explain anything: the teacher's attention against its gradients (Jain & Wallace 2019);
- a faithfulness test (deletion; DeYoung et al. 2020): remove the top-k attributed tokens and see the prediction change — more than when k random tokens go;
- LIME (Ribeiro et al. 2016) beside integrated gradients on one sentence;
- robustness: the accuracy drop under character typos, same-POS word swaps and dropped words, and whether adversarial training on the embeddings (FGM, Miyato et al. 2017) narrows it, for the teacher and for the distilled student.

The source article's FAQ answers "how do I generalise better?" with data augmentation and adversarial training (Q7) and "how do I interpret the model?" with LIME, SHAP and visualisation (Q8); this notebook measures both answers.
"""),
    code(r"""
import ktlab
cfg = ktlab.config.load()            # ktlab.config.load("full") on a GPU machine: bert-base-uncased teacher
"""),
    code(r"""
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, Markdown, display

from ktlab import explain, robustness                   # attributions, perturbations, FGM
from ktlab.experiments import explain as experiment     # the experiment's stages
from ktlab.experiments import serving

torch.set_num_threads(2)
notebook_started = time.time()
"""),
    md(r"""
## 1. The models

The same models as notebook 08 (`serving.train_or_load`, read back from the cache if notebook 08 ran): the MiniLM teacher fine-tuned on SST-2 and the BiLSTM students `hard` (gold labels), `kd` (the teacher's logits) and `hard+pca` (the teacher's embedding table, no distillation). All of them read the same WordPiece tokens, so their attributions line up token by token.
"""),
    code(r"""
models = serving.train_or_load(cfg.profile, "runs/serving-quick" if cfg.profile == "quick" else f"runs/serving-{cfg.profile}",
                               log=lambda line: None)
sizes = experiment.PROFILE_SIZES[cfg.profile]
print(sizes)
run = models.results
print(f"teacher: dev accuracy {100 * run['teacher']['dev_accuracy']:.1f}%;", ", ".join(
      f"{r['name']} {100 * r['dev_accuracy']:.1f}%" for r in run["students"]))
n = sizes.ig_sentences or len(models.dev_sentences)
sentences, labels = models.dev_sentences[:n], models.dev_labels[:n]
print(f"explaining {n} dev sentences")
"""),
    md(r"""
## 2. Integrated gradients

For a model $F$ (the logit of the class being explained) and an input $x$ — here the sequence of word embeddings — with a baseline $x'$ that carries no information (every word replaced by `[PAD]`, `[CLS]` and `[SEP]` kept), the attribution of coordinate $i$ is

$$\mathrm{IG}_i(x) = (x_i - x'_i)\int_0^1 \frac{\partial F\big(x' + \alpha (x - x')\big)}{\partial x_i}\, d\alpha \;\approx\; (x_i - x'_i)\, \frac{1}{m}\sum_{k=1}^{m} \frac{\partial F\big(x' + \tfrac{k}{m}(x - x')\big)}{\partial x_i},$$

a Riemann sum over $m$ steps along the straight path. A token's score is the sum over its embedding coordinates. **Completeness**: the scores add up to $F(x) - F(x')$; captum reports the gap (the convergence *delta*), which shrinks as $m$ grows. That is how you choose $m$:
"""),
    code(r"""
probe = [sentences[0]]
for steps in (4, 16, 64):
    a = explain.integrated_gradients(models.teacher, models.tokenizer, probe, n_steps=steps, max_length=models.max_length)[0]
    print(f"m = {steps:>2}: sum of scores {sum(a.scores):+.4f}, completeness gap (delta) {a.delta:+.2e}")
"""),
    md(r"""
### Stage 2 — every model, the same sentences: `attribute_all`

Each model is explained towards its *own* prediction; where teacher and student predict the same class, their attributions explain the same decision and can be compared.
"""),
    code(r"""
t0 = time.perf_counter()
attributions = experiment.attribute_all(models, sentences, sizes)
ig_seconds = time.perf_counter() - t0
for name, attrs in attributions.items():
    print(f"{name:<16} {len(attrs)} sentences, mean |delta| {np.mean([abs(a.delta) for a in attrs]):.2e}")
print(f"integrated gradients ({sizes.ig_steps} steps) for {len(attributions)} models in {ig_seconds:.0f} s")
"""),
    md(r"""
Green pushes towards the predicted class, red against it; the stronger the colour, the larger the score (each row scaled by its own largest |score|).
"""),
    code(r"""
shown = [i for i, a in enumerate(attributions["teacher"]) if 6 <= len(a.tokens) <= 16][:3]
for i in shown:
    display(HTML(explain.side_by_side_html([(name, attrs[i]) for name, attrs in attributions.items()])))
"""),
    md(r"""
### Stage 3 — does distillation transfer the reasons? `compare_reasons`

Per sentence (where both predict the same class): Spearman's rank correlation between the teacher's token scores and the student's, then the mean over sentences with a bootstrap 95% interval. The paired difference `kd − hard` uses the same sentences for both students.
"""),
    code(r"""
reasons = experiment.compare_reasons(attributions, cfg.seed)
rows = [{"student": k, "mean Spearman with teacher": v["mean_spearman"], "95% CI": f"{v['ci95'][0]:.3f} to {v['ci95'][1]:.3f}",
         "top-3 overlap": v["top3_overlap"], "sentences": v["sentences"]} for k, v in reasons.items() if k != "kd_minus_hard"]
display(pd.DataFrame(rows))
d = reasons["kd_minus_hard"]
print(f"kd - hard: {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}, {d['sentences']} sentences): {d['verdict']}")
"""),
    md(r"""
### Stage 4 — attention vs gradients: `attention_agreement`

Attention weights are often drawn as explanations. Here: the attention each token *receives* in the teacher's last layer (mean over heads and query positions; eager attention, since sdpa returns none) against the magnitude of its integrated gradient, rank-correlated per sentence.
"""),
    code(r"""
attention = experiment.attention_agreement(models, sentences, attributions["teacher"])
print({k: v for k, v in attention.items() if k != "scores"})
"""),
    md(r"""
### Stage 5 — are the attributions faithful? `faithfulness` (the deletion test)

If the top-attributed tokens are what the model uses, deleting them should change its predictions more than deleting the same number of random tokens. For $k = 1, 2, 3$: accuracy after deletion, the mean drop in the probability of the originally predicted class, and how often the prediction flips.
"""),
    code(r"""
deletion = experiment.faithfulness(models, sentences, labels, attributions, sizes, cfg.seed)
rows = []
for name, res in deletion.items():
    for k, r in res["k"].items():
        rows.append({"model": name, "k": k, "flip rate top-k": r["top"]["flip_rate"], "flip rate random": r["random"]["flip_rate"],
                     "prob drop top-k": r["top"]["prob_drop"], "prob drop random": r["random"]["prob_drop"],
                     "acc top-k": r["top"]["accuracy"], "acc random": r["random"]["accuracy"]})
display(pd.DataFrame(rows).round(3))
"""),
    md(r"""
### Stage 6 — LIME beside integrated gradients: `lime_beside_ig`

LIME explains one prediction by fitting a sparse linear model to the classifier's outputs on copies of the sentence with words removed at random. It needs only the probabilities (a black box), and works on words, so integrated gradients are summed to words to sit beside it.
"""),
    code(r"""
lime = experiment.lime_beside_ig(models, sentences[shown[0]] if shown else sentences[0], sizes, seed=cfg.seed)
for name, res in lime.items():
    lime_w = dict(res["lime_words"])
    print(f"{name}: predicts {models.label_names[res['predicted']]} (p = {res['prob']:.3f}); Spearman(IG, LIME) over words = {res['spearman_ig_lime']:.2f}")
    display(pd.DataFrame([{"word": w, "IG": s, "LIME": lime_w.get(w, 0.0)} for w, s in res["ig_words"]]).set_index("word").T.round(3))
"""),
    md(r"""
## 3. Robustness

### Stage 7 — perturbed dev sets: `perturbed_sets`

Three perturbations of the real dev sentences (`ktlab.robustness`), each word touched with probability $p$: a character **typo** (swap, delete, insert, or a QWERTY neighbour, words of 4+ letters), a **same-POS swap** (a random word of the same part of speech, from CoNLL-2003's tagged training sentences: `ktlab.augment`, the augmentation of notebook 04), and **dropped** words.
"""),
    code(r"""
sets = experiment.perturbed_sets(models.dev_sentences, sizes, cfg.seed, cfg.data_dir)
for kind, perturbed in sets.items():
    if kind != "clean":
        print(f"{kind:<5} ({100 * robustness.changed_fraction(sets['clean'], perturbed):.0f}% of sentences changed): {perturbed[1]}")
print(f"clean: {sets['clean'][1]}")
"""),
    md(r"""
### Stage 8 — adversarial training on the embeddings (FGM): `train_fgm_teachers`, `train_fgm_student`

FGM adds, at every training step, the worst small perturbation of the word embeddings to a first order:

$$r_{\text{adv}} = \epsilon\, \frac{g}{\lVert g \rVert_2}, \qquad g = \nabla_{e}\, L(e), \qquad L_{\text{train}} = L(e) + L(e + r_{\text{adv}}),$$

with $e$ the sentence's embedding sequence and the norm taken over the whole sentence (`ktlab.robustness.fgm_loss`). The plain and the FGM teacher are fine-tuned from the pretrained MiniLM on the same subset with the same recipe; the FGM student repeats the `kd` student's training with FGM added.

**ε is per model.** A perturbation of norm ε means little on its own: MiniLM's word vectors have norm ≈ 1.07, the BiLSTM's 300-d vectors ≈ 17. One FGM step of ε = 1 flips 86% of the fine-tuned teacher's dev predictions (ε = 0.1: 23%), and a teacher trained with ε = 1 collapsed to one class (50.9% clean on this profile) — so the teacher uses `sizes.fgm_teacher_epsilon` = 0.1, the BiLSTM `sizes.fgm_epsilon` = 1.0.
"""),
    code(r"""
data = experiment.training_data(models, sizes)
work = Path(f"runs/explain-{cfg.profile}") / "cache" / "notebook"
t0 = time.perf_counter()
fgm_teachers = experiment.train_fgm_teachers(models, data, sizes, work, log=print)
fgm_student = experiment.train_fgm_student(models, data, sizes, work, log=print)
print(f"epsilon = {sizes.fgm_teacher_epsilon} (teacher), {sizes.fgm_epsilon} (BiLSTM); trained (or reloaded) in {time.perf_counter() - t0:.0f} s")
"""),
    md(r"""
### Stage 9 — clean vs perturbed accuracy: `robustness_table`, `drop_change`

Each drop is measured on the same sentences, clean and perturbed, with McNemar's exact test. `drop_change` asks whether FGM narrows a model's drop: the per-sentence drop of the plain model minus that of its FGM twin, with a bootstrap interval (> 0: FGM drops less).
"""),
    code(r"""
named = {"teacher": models.teacher, **fgm_teachers,
         **{f"bilstm/{c}": models.students[c] for c in experiment.STUDENTS if c in models.students},
         "bilstm/kd+fgm": fgm_student}
table = experiment.robustness_table(named, sets, models.dev_labels, models.tokenizer, models.max_length)
plain_t, fgm_t = list(fgm_teachers)
fgm = {"teacher": experiment.drop_change(table, plain_t, fgm_t, models.dev_labels, cfg.seed),
       "student": experiment.drop_change(table, "bilstm/kd", "bilstm/kd+fgm", models.dev_labels, cfg.seed)}
display(Markdown(experiment.markdown_table({"robustness": table})))
for who, res in fgm.items():
    for kind, r in res.items():
        print(f"FGM {who:<7} {kind:<5}: drop narrowed by {r['narrowed_by_points']:+.1f} points (95% CI {r['ci95'][0]:+.1f} to {r['ci95'][1]:+.1f}): {r['verdict']}")
"""),
    md(r"""
## 4. The CPU bench (from `results/explain-bench/`)

`ktlab run explain --profile bench --models results/serving-bench --out results/explain-bench` explains every dev sentence with 50 steps, trains the plain and FGM teachers on 8,000 sentences and the FGM student on all 67,349. This cell reads its results:
"""),
    code(r"""
root = Path("..") if Path("../results").is_dir() else Path(".")
bench_dir = root / "results" / "explain-bench"
bench = experiment.load_results(bench_dir) if (bench_dir / "results.json").is_file() else None
if bench is None:
    print(f"no bench results in {bench_dir} yet: from the repository root run\n"
          "  ktlab run explain --profile bench --models results/serving-bench --out results/explain-bench")
else:
    print(f"bench: {bench['ig_sentences']} sentences explained ({bench['sizes']['ig_steps']} steps); FGM teachers on "
          f"{bench['fgm_teacher_train']} sentences, FGM student on {bench['student_train']}")
    for k, v in bench["reasons"].items():
        print(f"  {k:<16} " + (f"mean Spearman with teacher {v['mean_spearman']:.3f} ({v['ci95'][0]:.3f} to {v['ci95'][1]:.3f})"
                               if k != "kd_minus_hard" else f"{v['mean']:+.3f} ({v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f}): {v['verdict']}"))
    print("  attention vs |IG| (teacher):", {k: v for k, v in bench["attention_vs_ig"].items() if not isinstance(v, list)})
    display(Markdown(experiment.markdown_table(bench)))
    for who, res in bench["fgm"].items():
        if isinstance(res, dict):
            print(f"  FGM {who}: " + "; ".join(f"{kind} {r['narrowed_by_points']:+.1f} ({r['verdict']})" for kind, r in res.items()))
"""),
    md(r"""
## What we measured
"""),
    code(r"""
print(f"quick profile, {n} dev sentences explained with {sizes.ig_steps} steps")
for k, v in reasons.items():
    if k != "kd_minus_hard":
        print(f"{k:<16} mean Spearman with the teacher's attributions {v['mean_spearman']:.3f} on {v['sentences']} sentences")
print(f"kd - hard: {reasons['kd_minus_hard']['mean']:+.3f} ({reasons['kd_minus_hard']['verdict']})")
k1 = deletion["teacher"]["k"][min(deletion["teacher"]["k"])]
print(f"teacher deletion, top-1 vs random-1 flip rate: {k1['top']['flip_rate']:.3f} vs {k1['random']['flip_rate']:.3f}")
for name, row in table.items():
    drops = ", ".join(f"{kind} {row[kind]['drop_points']:+.1f}" for kind in robustness.PERTURBATIONS)
    print(f"{name:<24} clean {100 * row['clean']['accuracy']:.1f}%, drops in points: {drops}")
print(f"notebook compute time: {time.time() - notebook_started:.0f} s")
"""),
    md(r"""
## Try this

- Exercises (graded, `exercises/09_interpretability_and_robustness.ipynb`): integrated gradients as a Riemann sum on a tiny model, checked against captum (`09.ig_riemann`); the deletion test (`09.deletion_test`); one FGM step (`09.fgm_step`).
- **Another baseline**: `explain.integrated_gradients(..., baseline="mask")` replaces words by `[MASK]` instead of `[PAD]`. Do the teacher–student correlations change? Attributions are only defined relative to a baseline.
- **A larger ε**: `dataclasses.replace(sizes, fgm_epsilon=5.0)` in stage 8. Does clean accuracy fall before the perturbed accuracy rises?
- **Augmentation instead of FGM**: train the `kd+aug` student of notebook 04 (its transfer set uses the same same-POS swaps) and put it in `named`. Which defence helps against which perturbation?
- **SHAP**: `shap.Explainer` with a text masker is the third method the source article names; compare its word scores with LIME's on the sentence of stage 6.
"""),
]


def build(cells: list, path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    print(f"wrote {path} ({len(cells)} cells)")


if __name__ == "__main__":
    which = sys.argv[1:] or ["08", "09"]
    if "08" in which:
        build(NB08, ROOT / "notebooks" / "08_deployment.ipynb")
    if "09" in which:
        build(NB09, ROOT / "notebooks" / "09_interpretability_and_robustness.ipynb")
