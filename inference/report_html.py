"""The report's HTML pieces: inline SVG charts with axes, escaping, and the page's CSS and vanilla JS.

Everything a page needs is in it (no fonts, scripts or images from the network). Every string that comes from the
data (labels are caption words, URIs are user paths) goes through `esc` in markup, through `json_for_script`
inside the data block, and through `textContent` in the script, so no label can become markup.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import numpy as np

KEPT_COLOUR = "#2f9e44"
DROPPED_COLOUR = "#e8590c"
FAILED_COLOUR = "#c92a2a"
PRIMARY_COLOUR = "#1c7ed6"
REASON_COLOURS = ("#e8590c", "#f08c00", "#d6336c", "#ae3ec9", "#7048e8", "#868e96", "#495057")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def json_for_script(obj) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' can end the element early."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def fmt_int(n) -> str:
    return f"{int(n):,}"


def fmt_pct(part, whole) -> str:
    if not whole:
        return "–"
    share = 100.0 * part / whole
    return f"{share:.1f}%" if share < 10 else f"{share:.0f}%"


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps), about `target` of them."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (1.0 if integer else 1e-3)
    raw = (hi - lo) / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def _tick_text(v: float, step: float) -> str:
    """A tick value with as many decimals as its step needs (0.25 -> 2, 0.1 -> 1, 5 -> 0)."""
    if step >= 1:
        return fmt_int(round(v))
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(round(step, decimals) - step) > 1e-9:
        decimals += 1
    return f"{v:.{decimals}f}"


def histogram_svg(series: Sequence[tuple[str, np.ndarray, str]], x_label: str, bins: int = 30,
                  width: int = 560, height: int = 250) -> str:
    """Stacked histogram of one or more (name, values, colour) series on shared bins, with axes and counts."""
    cleaned = [(name, np.asarray(v, dtype=np.float64)[np.isfinite(np.asarray(v, dtype=np.float64))], colour)
               for name, v, colour in series]
    everything = np.concatenate([v for _, v, _ in cleaned]) if cleaned else np.zeros(0)
    if everything.size == 0:
        return f'<p class="empty">No {esc(x_label)} values.</p>'
    x_ticks = nice_ticks(float(everything.min()), float(everything.max()), 6)
    lo, hi = x_ticks[0], x_ticks[-1]
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.stack([np.histogram(v, bins=edges)[0] for _, v, _ in cleaned])  # [series, bins]
    totals = counts.sum(0)
    y_ticks = nice_ticks(0, max(1, int(totals.max())), 4, integer=True)
    y_top = y_ticks[-1]
    left, right, top, bottom = 56, 26, 12, 44  # right: room for the last x tick's text
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(v):
        return left + (v - lo) / (hi - lo) * plot_w

    def y_of(c):
        return top + plot_h - c / y_top * plot_h

    out = [f'<svg class="chart hist" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="histogram of {esc(x_label)}">']
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1
    for t in y_ticks:
        y = y_of(t)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_text(t, y_step)}</text>')
    bar_w = plot_w / bins
    for b in range(bins):
        base = 0
        parts = [f"{edges[b]:.3f} to {edges[b + 1]:.3f}"]
        for s, (name, _, colour) in enumerate(cleaned):
            c = int(counts[s, b])
            parts.append(f"{esc(name)}: {fmt_int(c)}")
            if c:
                y0, y1 = y_of(base), y_of(base + c)
                out.append(f'<rect x="{left + b * bar_w + 0.5:.1f}" y="{y1:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                           f'height="{y0 - y1:.1f}" fill="{colour}"/>')
            base += c
        # One invisible full-height target per bin carries the tooltip (range and count per series).
        out.append(f'<rect class="hit" x="{left + b * bar_w:.1f}" y="{top}" width="{bar_w:.1f}" height="{plot_h}">'
                   f'<title>{" · ".join(parts)}</title></rect>')
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1
    axis_y = top + plot_h
    out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}"/>'
               f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{axis_y}"/>')
    for t in x_ticks:
        x = x_of(t)
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y}" y2="{axis_y + 4}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{_tick_text(t, x_step)}</text>')
    out.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
               f'{esc(x_label)}</text>'
               f'<text class="axis-label" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">segments</text></svg>')
    legend = "".join(f'<span class="key"><i style="background:{colour}"></i>{esc(name)} '
                     f'<b>{fmt_int(len(v))}</b></span>' for name, v, colour in cleaned)
    return f'<figure class="hist-figure">{"".join(out)}<figcaption>{legend}</figcaption></figure>'


def bar_chart_svg(rows: Sequence[tuple[str, int, str]], total: int, width: int = 520, label_width: int = 120,
                  aria: str = "bar chart") -> str:
    """Horizontal bars (name, count, colour) with count and share of `total`, longest first as given."""
    if not rows:
        return ""
    row_h, top = 24, 4
    height = top + row_h * len(rows) + 4
    value_w = 112
    bar_space = width - label_width - value_w
    peak = max(1, max(c for _, c, _ in rows))
    out = [f'<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{esc(aria)}">']
    for i, (name, count, colour) in enumerate(rows):
        y = top + i * row_h
        w = max(2.0, bar_space * count / peak) if count else 0.0
        out.append(f'<g class="bar-row"><title>{esc(name)}: {fmt_int(count)} ({fmt_pct(count, total)})</title>'
                   f'<text class="bar-name" x="{label_width - 8}" y="{y + 16}" text-anchor="end">{esc(name)}</text>'
                   f'<rect x="{label_width}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="3" fill="{colour}"/>'
                   f'<text class="bar-value" x="{label_width + w + 6:.1f}" y="{y + 16}">{fmt_int(count)} '
                   f'<tspan class="share">{fmt_pct(count, total)}</tspan></text></g>')
    out.append("</svg>")
    return "".join(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (), cls: str = "") -> str:
    """A table of already-escaped cell HTML; columns in `numeric` are right-aligned."""
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
:root{--fg:#1f2933;--muted:#66727f;--line:#e3e7ec;--bg:#f5f7fa;--card:#fff;--primary:#1c7ed6;--kept:#2f9e44;
--dropped:#e8590c;--failed:#c92a2a;--warn:#f59f00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--primary);text-decoration:none}a:hover{text-decoration:underline}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
header.top{background:#17212b;color:#fff;padding:10px 24px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header.top h1{font-size:17px;margin:0;font-weight:600}header.top .path{color:#c5d0db;word-break:break-all}
header.top nav{margin-left:auto;display:flex;gap:14px}header.top nav a{color:#9fd1ff}
main{max-width:1280px;margin:0 auto;padding:12px 24px 40px}
.meta{color:var(--muted);margin:0 0 10px;font-size:13px}.meta b{color:var(--fg);font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-bottom:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:650;line-height:1.2}.card .s{color:var(--muted);font-size:12px}
.card.kept .v{color:var(--kept)}.card.dropped .v{color:var(--dropped)}.card.failed .v{color:var(--failed)}
.overview{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,7fr);gap:12px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;min-width:0}
.panel h2{font-size:15px;margin:0 0 8px}h2 .sub{color:var(--muted);font-weight:400;font-size:12px;margin-left:6px}
.ok{color:var(--kept);font-weight:600}.empty{color:var(--muted)}
.look{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.look .box{border:1px solid var(--line);border-radius:6px;padding:8px 10px;min-width:0}
.look h3{font-size:13px;margin:0 0 2px}.look .why{color:var(--muted);font-size:12px;margin:0 0 4px}
.look ol{list-style:none;margin:0;padding:0}.look li{display:flex;justify-content:space-between;gap:8px;
padding:2px 0;border-top:1px dashed var(--line)}
.look li a{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;min-width:0}
.look li .m{color:var(--muted);white-space:nowrap;font-variant-numeric:tabular-nums}
section.block{margin-top:22px}section.block>h2{font-size:18px;margin:0 0 8px}
.chart text{font-size:11px;fill:#3b4754}.chart .grid{stroke:#eef1f4}.chart .axis{stroke:#8895a3}
.chart .axis-label{font-size:12px;fill:#52606d}.chart .hit{fill:transparent}.chart .hit:hover{fill:rgba(28,126,214,.08)}
.chart .bar-name{font-size:12px}.chart .bar-value{font-size:12px;font-variant-numeric:tabular-nums}
.chart .share{fill:var(--muted)}
svg.chart{max-width:100%;height:auto;display:block}
.hists{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
.hist-figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
.hist-figure svg{width:100%}.hist-figure figcaption{display:flex;gap:14px;justify-content:center;font-size:12px}
.key i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;background:var(--card);width:100%}
td,th{border-bottom:1px solid var(--line);padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600;font-size:12px;color:#3b4754}.num{text-align:right;font-variant-numeric:tabular-nums}
td code{overflow-wrap:anywhere}
.browser{display:grid;grid-template-columns:340px minmax(0,1fr);gap:12px;align-items:start}
.list-pane{position:sticky;top:8px}
.list-tools{display:flex;gap:6px;margin-bottom:6px}
#label-search{flex:1;padding:7px 10px;border:1px solid #c4ccd4;border-radius:6px;font:inherit;min-width:0}
#label-sort{border:1px solid #c4ccd4;border-radius:6px;font:inherit;font-size:12px}
#label-summary{color:var(--muted);font-size:12px;margin:0 0 4px}
#label-list{list-style:none;margin:0;padding:0;border:1px solid var(--line);border-radius:6px;background:var(--card);
max-height:640px;overflow:auto}
#label-list li button{all:unset;box-sizing:border-box;display:grid;grid-template-columns:minmax(0,1fr) auto;gap:2px 8px;
width:100%;padding:5px 10px;border-bottom:1px solid var(--line);cursor:pointer}
#label-list li button:hover,#label-list li button:focus-visible{background:#eef6ff}
#label-list li.sel button{background:#dbeeff}
#label-list .n{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:550}
#label-list .c{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums;text-align:right}
#label-list .qbar{grid-column:1/3;height:3px;background:#edf0f3;border-radius:2px;overflow:hidden}
#label-list .qbar i{display:block;height:100%;background:var(--primary)}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:9px;background:#fff3bf;color:#7a5b00;
margin-left:6px;font-weight:500}
.pager{display:flex;justify-content:space-between;align-items:center;margin-top:6px;font-size:12px;color:var(--muted)}
.pager button{font:inherit;padding:3px 10px;border:1px solid #c4ccd4;border-radius:5px;background:#fff;cursor:pointer}
.pager button:disabled{opacity:.4;cursor:default}
#label-detail{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;min-height:300px}
#label-detail h3{font-size:20px;margin:0 0 2px;word-break:break-word}
#label-detail .stats{color:var(--muted);margin:0 0 10px}
#label-detail h4{font-size:13px;margin:12px 0 6px;color:#3b4754}
.grid{display:grid;grid-template-columns:repeat(auto-fill,204px);gap:10px}
figure.thumb{margin:0;background:#f8f9fb;border:1px solid var(--line);border-radius:6px;padding:5px;font-size:12px}
figure.thumb img{display:block;margin:0 auto;max-width:100%;image-rendering:auto}
figure.thumb figcaption{margin-top:4px;font-variant-numeric:tabular-nums}
figure.thumb .img-name{color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap;display:block}
figure.thumb .note{color:#9c3d00;display:block}
details.raw summary{cursor:pointer;font-weight:600}details.raw pre{background:var(--card);border:1px solid var(--line);
padding:10px;overflow:auto;max-height:600px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
@media (max-width:900px){.overview,.browser{grid-template-columns:1fr}.look{grid-template-columns:1fr}}
"""

# The label browser: data from the JSON block, a filtered/sorted index, 50 rows a page, galleries built on demand.
JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("reme-data").textContent);
  var L = D.labels, N = L.name.length, PAGE = 50;
  var lower = L.name.map(function (s) { return s.toLowerCase(); });
  var search = document.getElementById("label-search"), sort = document.getElementById("label-sort");
  var list = document.getElementById("label-list"), summary = document.getElementById("label-summary");
  var detail = document.getElementById("label-detail"), info = document.getElementById("page-info");
  var prev = document.getElementById("page-prev"), next = document.getElementById("page-next");
  var view = [], page = 0, selected = -1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
  function int(v) { return Number(v).toLocaleString("en-US"); }
  var sorters = {
    count: function (a, b) { return L.count[b] - L.count[a] || a - b; },
    quality_low: function (a, b) { return (L.q[a] === null) - (L.q[b] === null) || L.q[a] - L.q[b] || a - b; },
    quality_high: function (a, b) { return (L.q[a] === null) - (L.q[b] === null) || L.q[b] - L.q[a] || a - b; },
    outliers: function (a, b) { return L.out[b] - L.out[a] || L.count[b] - L.count[a] || a - b; },
    name: function (a, b) { return lower[a] < lower[b] ? -1 : lower[a] > lower[b] ? 1 : a - b; }
  };
  function refilter() {
    var q = search.value.trim().toLowerCase(), cmp = sorters[sort.value] || sorters.count, i;
    var exact = [], prefix = [], rest = [];
    for (i = 0; i < N; i++) {
      if (!q) { rest.push(i); continue; }
      var at = lower[i].indexOf(q);
      if (at < 0) continue;
      (lower[i] === q ? exact : at === 0 ? prefix : rest).push(i);
    }
    exact.sort(cmp); prefix.sort(cmp); rest.sort(cmp);
    view = exact.concat(prefix, rest);
    page = 0;
    render();
  }
  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(page, pages - 1);
    list.textContent = "";
    var frag = document.createDocumentFragment();
    view.slice(page * PAGE, page * PAGE + PAGE).forEach(function (i) {
      var li = el("li", i === selected ? "label-item sel" : "label-item"), b = el("button");
      b.type = "button";
      b.dataset.index = i;
      var n = el("span", "n", L.name[i]);
      if (L.flag[i]) n.appendChild(el("span", "badge", L.flag[i]));
      b.appendChild(n);
      b.appendChild(el("span", "c", int(L.count[i]) + " · q " + num(L.q[i], 2)));
      var bar = el("span", "qbar"), fill = el("i");
      fill.style.width = (L.q[i] === null ? 0 : Math.max(0, Math.min(1, L.q[i])) * 100) + "%";
      bar.appendChild(fill);
      b.appendChild(bar);
      li.appendChild(b);
      frag.appendChild(li);
    });
    list.appendChild(frag);
    var from = view.length ? page * PAGE + 1 : 0, to = Math.min(view.length, (page + 1) * PAGE);
    summary.textContent = search.value.trim() ? int(view.length) + " of " + int(N) + " labels match"
                                              : int(N) + " labels";
    info.textContent = from + "–" + to + " of " + int(view.length);
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  function figure(t) {
    var f = el("figure", "thumb"), img = el("img");
    img.src = t[0];
    img.alt = "segment of " + t[3];
    img.loading = "lazy";
    f.appendChild(img);
    var cap = el("figcaption");
    cap.appendChild(el("span", null, "quality " + num(t[1], 3) + " · pair " + num(t[2], 3)));
    var name = el("span", "img-name", t[3].split("/").pop());
    name.title = t[3];
    cap.appendChild(name);
    if (t[4]) { var note = el("span", "note", t[4]); note.title = t[5] || ""; cap.appendChild(note); }
    f.appendChild(cap);
    return f;
  }
  function show(i) {
    selected = i;
    detail.textContent = "";
    detail.appendChild(el("h3", null, L.name[i]));
    var s = int(L.count[i]) + " segments kept · mean quality " + num(L.q[i], 3) + " · mean pair score " +
            num(L.p[i], 3) + " · " + int(L.out[i]) + " dropped as outliers";
    var stats = el("p", "stats", s);
    if (L.flag[i]) stats.appendChild(el("span", "badge", L.flag[i]));
    detail.appendChild(stats);
    var g = D.galleries[String(i)];
    if (!g) {
      detail.appendChild(el("p", "empty", "No thumbnails for this label in this report: thumbnails are made for the " +
        D.gallery_note + ". Rebuild with a larger --max_galleries to see more."));
    } else {
      [["top", "Most typical (highest quality)"], ["low", "Least typical (lowest quality)"],
       ["out", "Dropped as outliers"]].forEach(function (part) {
        if (!g[part[0]] || !g[part[0]].length) return;
        detail.appendChild(el("h4", null, part[1]));
        var grid = el("div", "grid");
        g[part[0]].forEach(function (t) { grid.appendChild(figure(t)); });
        detail.appendChild(grid);
      });
    }
    Array.prototype.forEach.call(list.querySelectorAll("li"), function (li) {
      li.classList.toggle("sel", Number(li.firstChild.dataset.index) === i);
    });
  }
  function fromHash() {
    var h = location.hash;
    if (h.indexOf("#label=") !== 0) return false;
    var name;
    try { name = decodeURIComponent(h.slice(7)); } catch (e) { return false; }  // a hand-typed, malformed link
    var i = L.name.indexOf(name);
    if (i < 0) return false;
    show(i);
    return true;
  }
  list.addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (b) show(Number(b.dataset.index));
  });
  search.addEventListener("input", refilter);
  sort.addEventListener("change", refilter);
  prev.addEventListener("click", function () { page--; render(); });
  next.addEventListener("click", function () { page++; render(); });
  window.addEventListener("hashchange", function () {
    if (fromHash()) document.getElementById("labels").scrollIntoView();
  });
  refilter();
  if (!N) detail.appendChild(el("p", "empty", "This reference set has no labels."));
  else if (!fromHash()) show(view[0]);
  document.documentElement.dataset.ready = "1";
})();
"""
