"""Terminal rendering: cell formatting and a certification plot that survives untested ratios."""
from __future__ import annotations

from onnxprune.report import certification_plot, fmt


def test_cells():
    assert fmt(None) == "-"
    assert fmt(0.123456) == "0.1235"
    assert fmt(1234.5) == "1,234.5"
    assert fmt(1234567) == "1,234,567"
    assert fmt("x") == "x"


def test_certification_plot_draws_only_the_tested_ratios(tmp_path):
    c = {"grid": [0.2, 0.5, 0.8], "empirical_risk": [0.0, 0.2, None], "pvalues": [1e-4, 1.0, None],
         "certified": [True, False, False], "tested": [True, True, False], "certified_ratio": 0.2, "eps": 0.05,
         "delta": 0.1}
    p = certification_plot(c, tmp_path / "c.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
