"""Attributions as coloured text: red pushes towards the predicted class, blue against it.

Plain HTML with inline styles (no JavaScript, no CDN), so it renders offline in JupyterLab and
in an exported notebook."""
from __future__ import annotations

import html
from typing import Sequence

from ktlab.explain.gradients import TokenAttribution


def _span(token: str, score: float, scale: float) -> str:
    alpha = min(1.0, abs(score) / scale) if scale > 0 else 0.0
    rgb = "220,38,38" if score >= 0 else "37,99,235"
    return (f'<span title="{score:+.4f}" style="background: rgba({rgb},{alpha:.2f}); '
            f'padding: 1px 2px; margin: 0 1px; border-radius: 3px">{html.escape(token)}</span>')


def attribution_html(attr: TokenAttribution, skip_special: bool = True) -> str:
    """One sentence, each token shaded by |score| / max |score| (hover shows the number)."""
    pairs = [(t, s) for t, s in zip(attr.tokens, attr.scores)
             if not (skip_special and t in ("[CLS]", "[SEP]", "[PAD]"))]
    scale = max((abs(s) for _, s in pairs), default=0.0)
    return " ".join(_span(t, s, scale) for t, s in pairs)


def side_by_side_html(rows: Sequence[tuple[str, TokenAttribution]]) -> str:
    """A table: one row per model (name, prediction and probability, coloured sentence)."""
    body = "".join(
        f"<tr><td style='text-align:left;padding-right:8px'><b>{html.escape(name)}</b></td>"
        f"<td style='text-align:left;padding-right:8px'>class {a.predicted} ({a.prob:.2f})</td>"
        f"<td style='text-align:left'>{attribution_html(a)}</td></tr>" for name, a in rows)
    return ("<table><tr><th>model</th><th>prediction</th><th>tokens (red: for the predicted "
            f"class, blue: against)</th></tr>{body}</table>")
