"""The benchmark's picture: TFLOPS against sequence length, one line per method, one panel per
variant and head dim (forward on top, forward + backward below), as an SVG file (no plotting
library: the GPU machine has none and no network).

    python bench/plot_bench.py REPORT.md [OUT.svg [TITLE]]    # OUT defaults to REPORT.svg

REPORT.md: what bench/attention_bench.py --out writes (or bench/RESULTS.md: the last
"| case | kept | ..." table is plotted). attention_bench.py calls write_plot itself.
"""
from __future__ import annotations

import math
import re
import sys
from collections import defaultdict
from html import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
PANEL_W, PANEL_H, MARGIN_L, MARGIN_B, GAP = 230, 170, 46, 34, 18


def parse_summary(text: str) -> tuple:
    """(methods, rows) of the last "| case | kept | ..." table: rows are dicts with variant,
    S, D, method, fwd and fb (TFLOPS or None)."""
    tables = re.findall(r"^\| case \| kept \|(.*)\n\|[-|]+\|\n((?:\|.*\|\n?)+)", text, re.M)
    if not tables:
        raise ValueError("no '| case | kept | ...' table found")
    head, body = tables[-1]
    methods = [m.strip() for m in head.strip().strip("|").split("|")]
    rows = []
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"(\S+) S(\d+)(k?) D(\d+)", cells[0])
        if not m:
            continue
        S = int(m.group(2)) * (1024 if m.group(3) else 1)
        for method, cell in zip(methods, cells[2:]):
            nums = re.match(r"([\d.]+|n/a) / ([\d.]+|n/a)", cell)
            if not nums:
                continue
            fwd, fb = (None if x == "n/a" else float(x) for x in nums.groups())
            rows.append(dict(variant=m.group(1), S=S, D=int(m.group(4)), method=method,
                             fwd=fwd, fb=fb))
    return methods, rows


def _ticks(top: float) -> list:
    step = 10 ** math.floor(math.log10(max(top, 1e-9)))
    for mult in (1, 2, 5, 10):
        if top / (step * mult) <= 5:
            step *= mult
            break
    return [i * step for i in range(int(top / step) + 1)]


def svg(methods: list, rows: list, title: str = "", columns: int = 4) -> str:
    """One cell per (variant, head dim), at most `columns` a row; each cell holds the forward
    panel above the forward + backward one. y from 0, x log2(S)."""
    panels = sorted({(r["variant"], r["D"]) for r in rows},
                    key=lambda p: (p[0] not in ("plain", "causal"), p[0] != "plain", p[0], p[1]))
    metrics = [("fwd", "fwd"), ("fb", "fwd+bwd")]
    seqs = sorted({r["S"] for r in rows})
    ncol = min(columns, len(panels))
    nrow = -(-len(panels) // ncol)
    cell_h = len(metrics) * (PANEL_H + MARGIN_B)
    width = MARGIN_L + ncol * (PANEL_W + GAP) + 10
    height = 50 + nrow * (cell_h + 10) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="13">{escape(title)}</text>']
    color = {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}
    lx = 10
    for m in methods:  # legend
        out.append(f'<line x1="{lx}" y1="32" x2="{lx + 18}" y2="32" stroke="{color[m]}" '
                   f'stroke-width="2"/><text x="{lx + 22}" y="36">{escape(m)}</text>')
        lx += 30 + 7 * len(m)
    tops = {key: max([r[key] for r in rows if r[key]] + [1.0]) * 1.2 for key, _ in metrics}
    for index, (variant, D) in enumerate(panels):
        col, row = index % ncol, index // ncol
        x0 = MARGIN_L + col * (PANEL_W + GAP)
        span = [s for s in seqs if any(r["S"] == s and r["variant"] == variant and r["D"] == D
                                       for r in rows)]
        lo, hi = math.log2(min(span)), math.log2(max(span))

        def px(S):
            return x0 + (PANEL_W / 2 if hi == lo else (math.log2(S) - lo) / (hi - lo)
                         * (PANEL_W - 20) + 10)
        for mi, (key, label) in enumerate(metrics):
            y0 = 50 + row * (cell_h + 10) + mi * (PANEL_H + MARGIN_B)
            top = tops[key]

            def py(t):
                return y0 + PANEL_H - t / top * PANEL_H
            out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" '
                       'fill="none" stroke="#999"/>')
            out.append(f'<text x="{x0 + 4}" y="{y0 + 13}">{escape(variant)} D{D}, {label}</text>')
            for t in _ticks(top / 1.2):
                out.append(f'<line x1="{x0}" y1="{py(t):.1f}" x2="{x0 + PANEL_W}" '
                           f'y2="{py(t):.1f}" stroke="#eee"/>')
                if col == 0:
                    out.append(f'<text x="{x0 - 4}" y="{py(t) + 4:.1f}" text-anchor="end">'
                               f'{t:g}</text>')
            for S in span:
                text = f"{S // 1024}k" if S >= 1024 else str(S)
                out.append(f'<text x="{px(S):.1f}" y="{y0 + PANEL_H + 14}" '
                           f'text-anchor="middle">S {text}</text>')
            for m in methods:
                pts = sorted((r["S"], r[key]) for r in rows if r["method"] == m and
                             r["variant"] == variant and r["D"] == D and r[key])
                if not pts:
                    continue
                xy = " ".join(f"{px(S):.1f},{py(t):.1f}" for S, t in pts)
                out.append(f'<polyline points="{xy}" fill="none" stroke="{color[m]}" '
                           'stroke-width="2"/>')
                out += [f'<circle cx="{px(S):.1f}" cy="{py(t):.1f}" r="3" fill="{color[m]}">'
                        f'<title>{escape(m)} {S}: {t:g} TFLOPS</title></circle>' for S, t in pts]
            if col == 0:
                out.append(f'<text x="12" y="{y0 + PANEL_H / 2}" transform="rotate(-90 12 '
                           f'{y0 + PANEL_H / 2})" text-anchor="middle">TFLOPS</text>')
    out.append(f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">sequence length '
               '(tokens per batch fixed: B = 16k / S)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(report_text: str, path: str, title: str = "") -> str:
    """Writes the SVG of a report's summary table to path; returns path."""
    methods, rows = parse_summary(report_text)
    with open(path, "w") as f:
        f.write(svg(methods, rows, title))
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    src = argv[0]
    dst = argv[1] if len(argv) > 1 else re.sub(r"\.md$", "", src) + ".svg"
    text = open(src).read()
    header = next((ln for ln in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", ln)), "")
    title = argv[2] if len(argv) > 2 else "attention TFLOPS " + header.strip()
    print(write_plot(text, dst, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
