"""ipywidgets demos. :func:`attention_explorer`: pick a sentence, a layer and a head and see
that head's attention map (matplotlib, so it works in JupyterLab, VS Code and nbconvert).

Attention is computed once per sentence (all layers) and cached; moving the layer or head
sliders only redraws.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ktlab.viz.attention import SentenceAttention, attentions_for, plot_attention


class AttentionExplorer:
    """The state behind the widget; ``.widget`` is what a notebook displays."""

    def __init__(self, model: Any, tokenizer: Any, sentences: Sequence[str],
                 layer: int = 0, head: int = 0) -> None:
        import ipywidgets as W
        if not sentences:
            raise ValueError("give at least one sentence to explore")
        self.model, self.tokenizer = model, tokenizer
        self._cache: dict[str, SentenceAttention] = {}
        first = self.attention(sentences[0])
        self.sentence = W.Dropdown(options=list(sentences), value=sentences[0],
                                   description="sentence", layout=W.Layout(width="95%"))
        self.layer = W.IntSlider(value=layer, min=0, max=first.num_layers - 1, description="layer")
        self.head = W.IntSlider(value=head, min=0, max=first.num_heads - 1, description="head")
        self.output = W.Output()
        for control in (self.sentence, self.layer, self.head):
            control.observe(lambda _change: self.render(), names="value")
        self.widget = W.VBox([self.sentence, W.HBox([self.layer, self.head]), self.output])
        self.last_title: Optional[str] = None
        self.render()

    def attention(self, sentence: str) -> SentenceAttention:
        if sentence not in self._cache:
            self._cache[sentence] = attentions_for(self.model, self.tokenizer, sentence)
        return self._cache[sentence]

    def render(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display
        sa = self.attention(self.sentence.value)
        layer, head = self.layer.value, self.head.value
        self.last_title = f"layer {layer}, head {head}"
        with self.output:
            self.output.clear_output(wait=True)
            ax = plot_attention(sa.attentions[layer][head], sa.tokens, title=self.last_title)
            display(ax.figure)
            plt.close(ax.figure)


def attention_explorer(model: Any, tokenizer: Any, sentences: Sequence[str], layer: int = 0,
                       head: int = 0) -> Any:
    """Build the explorer and return its widget (display it as a cell's last expression)."""
    return AttentionExplorer(model, tokenizer, sentences, layer, head).widget
