"""bench/attention_bench.py writes a plot next to its table (issue 16): TFLOPS against
sequence length, one line per method, one panel per variant (bench/plot_bench.py, SVG)."""
import os
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

_cache = os.environ.get("AE_CACHE_DIR")
import attention_bench as bench  # noqa: E402  (points AE_CACHE_DIR at a folder of its own)
import plot_bench  # noqa: E402
from baselines import Method, Problem  # noqa: E402

if _cache is not None:
    os.environ["AE_CACHE_DIR"] = _cache

SVG = "{http://www.w3.org/2000/svg}"


def result(variant, S, times):
    r = bench.CaseResult(Problem(variant, 16384 // S, 16, S, 128, device="cpu"))
    r.timings = [bench.Timing(m, fwd_ms=f, fb_ms=b) for m, (f, b) in times.items()]
    return r


def test_report_writes_its_plot_beside_it(tmp_path):
    methods = [Method(n, None) for n in ("attention_engine", "sdpa-flash")]
    results = [result("causal", 4096, {"attention_engine": (1.0, 3.0), "sdpa-flash": (2.0, 5.0)}),
               result("causal", 16384, {"attention_engine": (4.0, 12.0),
                                        "sdpa-flash": (7.0, 20.0)}),
               result("alibi", 4096, {"attention_engine": (1.2, 3.5)})]
    path = tmp_path / "report.md"
    text = bench.write_report(str(path), results, {}, methods, "2026-12-01 test")
    svg = ET.parse(tmp_path / "report.svg").getroot()
    lines = svg.findall(f"{SVG}polyline")
    # causal: two methods x (fwd, fwd+bwd); alibi: one method x two
    assert len(lines) == 6
    causal_engine = [p for p in lines if p.get("stroke") == plot_bench.COLORS[0]][0]
    assert len(causal_engine.get("points").split()) == 2  # S 4k and 16k on one line
    labels = {t.text for t in svg.iter(f"{SVG}text")}
    assert {"attention_engine", "sdpa-flash", "causal D128, fwd", "alibi D128, fwd+bwd"} <= labels
    methods_parsed, rows = plot_bench.parse_summary(text)
    assert methods_parsed == ["attention_engine", "sdpa-flash"]
    want = bench.tflops(bench.fwd_flops(results[0].problem), 1.0)
    assert [r["fwd"] for r in rows if r["variant"] == "causal" and r["S"] == 4096 and
            r["method"] == "attention_engine"] == [float(f"{want:.3g}")]


def test_plot_of_the_recorded_results(tmp_path):
    out = tmp_path / "results.svg"
    plot_bench.main([os.path.join(ROOT, "bench", "RESULTS.md"), str(out)])
    svg = ET.parse(out).getroot()
    assert len(svg.findall(f"{SVG}polyline")) > 0
