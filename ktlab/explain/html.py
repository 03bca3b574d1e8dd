"""Token scores as coloured HTML, for ``IPython.display.HTML`` in the notebooks.

Green: the token pushes towards the explained class; red: against it. The colour's strength is
``|score| / max |score|`` of the row, so each sentence uses the whole scale (compare *which*
tokens matter across models, not the raw sizes: a teacher's logits and a BiLSTM's differ in
scale). Plain inline styles, everything escaped: no JavaScript or external CSS, so the output
survives in a saved notebook and cannot inject markup.
"""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

POSITIVE = (0, 150, 0)     #: green, towards the explained class
NEGATIVE = (210, 0, 0)     #: red, against it


def attribution_html(attr: Any, max_abs: Optional[float] = None) -> str:
    """One sentence as ``<span>``s, one per token, coloured by its score (hover: the value).

    ``attr`` is a :class:`~ktlab.explain.TokenAttribution` or anything with ``tokens`` and
    ``scores`` (attention scores, too). ``max_abs`` fixes the scale (default: the row's own)."""
    peak = max_abs if max_abs is not None else max((abs(s) for s in attr.scores), default=0.0)
    spans = []
    for token, score in zip(attr.tokens, attr.scores):
        red, green, blue = POSITIVE if score >= 0 else NEGATIVE
        alpha = min(abs(score) / peak, 1.0) if peak > 0 else 0.0
        spans.append(f'<span title="{score:+.4f}" style="background-color: '
                     f'rgba({red}, {green}, {blue}, {alpha:.2f}); padding: 1px 2px; '
                     f'border-radius: 3px">{html.escape(token)}</span>')
    return '<span style="line-height: 1.9">' + " ".join(spans) + "</span>"


def side_by_side_html(rows: Sequence[tuple[str, Any]]) -> str:
    """A table of ``(name, attribution)`` rows for the same sentence: one model per row, with
    the class it predicts and the probability, to see whether they rely on the same words."""
    body = []
    for name, attr in rows:
        predicted = getattr(attr, "predicted", None)
        verdict = "" if predicted is None else f"{predicted} (p = {attr.prob:.2f})"
        body.append(f'<tr><th style="text-align: left; padding-right: 1em">{html.escape(name)}'
                    f'</th><td style="padding-right: 1em">{html.escape(verdict)}</td>'
                    f'<td style="text-align: left">{attribution_html(attr)}</td></tr>')
    head = ('<tr><th style="text-align: left">model</th><th style="text-align: left">predicts'
            '</th><th style="text-align: left">tokens (green: for the prediction, red: against)'
            '</th></tr>')
    return '<table style="border-collapse: collapse">' + head + "".join(body) + "</table>"
