"""ktlab.viz: matplotlib attention maps and offline bertviz views, rendered in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from ktlab.nn import BertConfig, BertModel  # noqa: E402
from ktlab.viz import (attention_entropy, attentions_for, head_view_html,  # noqa: E402
                       model_view_html, plot_attention, plot_heads, save_html)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ERROR_PROBE = """<script>window.__errors = [];
window.addEventListener('error', function (e) {
  var d = document.createElement('div'); d.className = 'ktlab-script-error';
  d.textContent = String(e.message); document.documentElement.appendChild(d); });</script>"""


@pytest.fixture(scope="module")
def tokenizer():
    from ktlab.models import load_tokenizer
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def sentence_attention(tokenizer):
    torch.manual_seed(0)
    model = BertModel(BertConfig.tiny(vocab_size=len(tokenizer), num_attention_heads=4))
    return attentions_for(model, tokenizer, "The cat sat on the mat.", "It was tired.")


def test_attentions_for_shapes(sentence_attention):
    sa = sentence_attention
    assert sa.tokens[0] == "[CLS]" and sa.tokens[-1] == "[SEP]"
    assert sa.tokens[sa.sentence_b_start - 1] == "[SEP]"
    assert sa.num_layers == 2 and sa.num_heads == 4
    for a in sa.attentions:
        assert a.shape == (4, len(sa.tokens), len(sa.tokens))
        assert torch.allclose(a.sum(-1), torch.ones(4, len(sa.tokens)), atol=1e-5)
    ent = attention_entropy(sa)
    assert ent.shape == (2, 4) and (ent > 0).all()


def test_matplotlib_heatmaps(sentence_attention):
    sa = sentence_attention
    ax = plot_attention(sa.attentions[0][1], sa.tokens, title="layer 0 head 1")
    assert ax.get_title() == "layer 0 head 1" and len(ax.get_xticklabels()) == len(sa.tokens)
    fig = plot_heads(sa, layer=1)
    assert len([a for a in fig.axes if a.images]) == 4
    with pytest.raises(ValueError, match="does not match"):
        plot_attention(sa.attentions[0][0], sa.tokens[:-1])
    with pytest.raises(ValueError, match="layer must be"):
        plot_heads(sa, layer=5)
    import matplotlib.pyplot as plt
    plt.close("all")


def test_views_are_self_contained(sentence_attention):
    sa = sentence_attention
    for html in (head_view_html(sa.attentions, sa.tokens, sa.sentence_b_start),
                 model_view_html(sa.attentions, sa.tokens, sa.sentence_b_start)):
        assert "cdnjs" not in html and "require.min.js" not in html
        assert "requirejs(" not in html and "require.config" not in html
        assert "d3js.org v5.16.0" in html and "jQuery v3.7.1" in html
        assert re.search(r'id="bertviz-[0-9a-f]+"', html)
    with pytest.raises(ValueError, match="slice the batch"):
        head_view_html([torch.rand(2, 4, 5, 5)], ["a"] * 5)


def _render(path, tmp_path) -> tuple[str, str]:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--dump-dom", path.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with "
                    "apt-get install chromium); the offline bertviz views cannot be rendered")
@pytest.mark.parametrize("view", ["head", "model"])
def test_views_render_in_headless_chromium(sentence_attention, tmp_path, view):
    sa = sentence_attention
    make = head_view_html if view == "head" else model_view_html
    page = save_html(ERROR_PROBE + make(sa.attentions, sa.tokens, sa.sentence_b_start),
                     tmp_path / f"{view}.html")
    dom, log = _render(page, tmp_path)
    assert 'class="ktlab-script-error"' not in dom, re.findall(r'ktlab-script-error">([^<]*)', dom)
    assert "Uncaught" not in log, [line for line in log.splitlines() if "CONSOLE" in line]
    assert "d3 version 5.16.0" in log or view == "model"  # the view's own console.log ran
    assert dom.count("<svg") >= 1
    # the drawing itself: attention lines (head view) or per-head thumbnails (model view)
    assert dom.count("<line") > len(sa.tokens) ** 2 / 2
    if view == "head":  # the model view draws thumbnails without token labels
        for token in ("cat", "mat", "tired"):
            assert f">{token}<" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with "
                    "apt-get install chromium); the offline bertviz views cannot be rendered")
def test_browser_check_catches_bertviz_cdn_view_offline(sentence_attention, tmp_path):
    """The same probe on bertviz's own output (require.js from a CDN, blocked here): the error
    is caught and nothing is drawn - so the test above can fail."""
    from bertviz import head_view
    sa = sentence_attention
    raw = head_view([a[None] for a in sa.attentions], sa.tokens, html_action="return").data
    raw = raw.replace("https://cdnjs.cloudflare.com", "http://127.0.0.1:9")  # never reachable
    dom, _ = _render(save_html(ERROR_PROBE + raw, tmp_path / "cdn.html"), tmp_path)
    assert 'class="ktlab-script-error"' in dom
    assert dom.count("<line") == 0


def test_attention_explorer_follows_controls(tokenizer):
    from ktlab.widgets import AttentionExplorer
    torch.manual_seed(0)
    model = BertModel(BertConfig.tiny(vocab_size=len(tokenizer), num_attention_heads=4))
    explorer = AttentionExplorer(model, tokenizer, ["a good film .", "a bad , bad film ."])
    assert explorer.layer.max == 1 and explorer.head.max == 3
    assert explorer.last_title == "layer 0, head 0"
    explorer.head.value = 3
    explorer.layer.value = 1
    assert explorer.last_title == "layer 1, head 3"
    explorer.sentence.value = "a bad , bad film ."
    assert len(explorer._cache) == 2
    with pytest.raises(ValueError, match="at least one sentence"):
        AttentionExplorer(model, tokenizer, [])
