"""bertviz views that render with no internet, in JupyterLab, VS Code and a plain browser.

bertviz 1.4.1 emits a ``<script src=…require.min.js>`` from a CDN and asks require.js to fetch
d3 5.7 and jQuery 2.0 from cdnjs. Offline that draws nothing. Here the same view code runs with
the d3 and jQuery that ship inside ktlab (``ktlab/viz/static/``, versions and licences in
``THIRD_PARTY_LICENSES.txt``), inlined into one self-contained HTML block:

* the libraries are evaluated inside a function where ``define``/``module``/``exports`` are
  undefined, so neither registers with a page's AMD loader (the classic Notebook has one) and
  d3 lands on a private object rather than ``window``;
* jQuery is taken back with ``jQuery.noConflict(true)``, leaving the page's own ``$`` alone;
* bertviz's ``require.config(...)``/``requirejs([...], function ($, d3) {...})`` wrapper
  becomes ``(function ($, d3) {...})(jq, d3)``: no require.js at all.
"""
from __future__ import annotations

import html as html_lib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

STATIC = Path(__file__).with_name("static")
_REQUIRE_TAG = re.compile(r'<script src="[^"]*require(\.min)?\.js"></script>')
_REQUIRE_WRAPPER = re.compile(
    r"require\.config\(\{.*?\}\);\s*requirejs\(\['jquery',\s*'d3'\],\s*function\s*\(\$,\s*d3\)\s*\{",
    re.S)


@lru_cache(maxsize=1)
def _library_prelude() -> str:
    """JS that defines ``__ktlab_d3`` and ``__ktlab_jq`` as locals of the enclosing function."""
    d3 = (STATIC / "d3.min.js").read_text(encoding="utf-8")
    jq = (STATIC / "jquery.min.js").read_text(encoding="utf-8")
    return ("var __ktlab_libs = {};\n"
            "(function (define, module, exports) {\n" + d3 + "\n}).call(__ktlab_libs);\n"
            "var __ktlab_d3 = __ktlab_libs.d3;\n"
            "(function (define, module, exports) {\n" + jq + "\n}).call(window);\n"
            "var __ktlab_jq = window.jQuery.noConflict(true);\n")


def make_offline(bertviz_html: str) -> str:
    """Rewrite the HTML bertviz returns (``html_action='return'``) into a self-contained block."""
    text = _REQUIRE_TAG.sub("", bertviz_html)
    start = text.find('<script type="text/javascript">')
    end = text.rfind("</script>")
    if start < 0 or end < 0:
        raise ValueError("unexpected bertviz output (no inline script); ktlab supports bertviz 1.4")
    body = text[start + len('<script type="text/javascript">'):end]
    body, n = _REQUIRE_WRAPPER.subn("(function ($, d3) {", body, count=1)
    if n != 1:
        raise ValueError("bertviz's require.js wrapper was not found; ktlab supports bertviz 1.4")
    body = body.rstrip()
    if not body.endswith("});"):
        raise ValueError("unexpected end of bertviz's view script; ktlab supports bertviz 1.4")
    body = body[:-3] + "})(__ktlab_jq, __ktlab_d3);"
    script = ('<script type="text/javascript">\n(function () {\n' + _library_prelude() + body
              + "\n})();\n</script>\n")
    return text[:start] + script + text[end + len("</script>"):]


def _as_layers(attentions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """bertviz wants one ``(1, heads, T, T)`` tensor per layer."""
    layers = []
    for a in attentions:
        a = torch.as_tensor(a).detach().float().cpu()
        if a.dim() == 3:
            a = a[None]
        if a.dim() != 4 or a.shape[0] != 1:
            raise ValueError(f"each layer's attention must be (heads, T, T) or (1, heads, T, T) "
                             f"for one sentence; got {tuple(a.shape)} - slice the batch first")
        layers.append(a)
    return layers


def head_view_html(attentions: Sequence[torch.Tensor], tokens: Sequence[str],
                   sentence_b_start: Optional[int] = None, layer: Optional[int] = None,
                   heads: Optional[list[int]] = None) -> str:
    """Self-contained HTML for bertviz's head view (lines from each token to the tokens it
    attends to, one colour per head)."""
    from bertviz import head_view
    out = head_view(_as_layers(attentions), list(tokens), sentence_b_start=sentence_b_start,
                    layer=layer, heads=heads, html_action="return")
    return make_offline(out.data)


def model_view_html(attentions: Sequence[torch.Tensor], tokens: Sequence[str],
                    sentence_b_start: Optional[int] = None,
                    include_layers: Optional[list[int]] = None,
                    include_heads: Optional[list[int]] = None, display_mode: str = "light") -> str:
    """Self-contained HTML for bertviz's model view (a thumbnail per layer and head)."""
    from bertviz import model_view
    out = model_view(_as_layers(attentions), list(tokens), sentence_b_start=sentence_b_start,
                     include_layers=include_layers, include_heads=include_heads,
                     display_mode=display_mode, html_action="return")
    return make_offline(out.data)


def head_view(*args: Any, **kwargs: Any) -> None:
    """Display :func:`head_view_html` in the notebook (one ``text/html`` output)."""
    from IPython.display import HTML, display
    display(HTML(head_view_html(*args, **kwargs)))


def model_view(*args: Any, **kwargs: Any) -> None:
    """Display :func:`model_view_html` in the notebook."""
    from IPython.display import HTML, display
    display(HTML(model_view_html(*args, **kwargs)))


def save_html(view_html: str, path: str | Path, title: str = "ktlab attention view") -> Path:
    """Write a view as a standalone page (opens offline in any browser)."""
    path = Path(path)
    path.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
                    f"{html_lib.escape(title)}</title></head>\n<body>\n{view_html}\n</body></html>\n",
                    encoding="utf-8")
    return path
