"""The report as data: certification rows over the whole grid (untested ratios said so) and report.md."""
from __future__ import annotations

import numpy as np

from onnxprune.certify import certify
from onnxprune.report import certification_rows, markdown
from onnxprune.report.tables import ratio_label

LOSSES = np.zeros((2, 200))
LOSSES[1, :40] = 1  # ratio 0.5: risk 0.2, fails at ε = 0.05


def _cert_dict(tested: int = 2) -> dict:
    """A certification dict over the grid 0.2, 0.5, 0.8 of which the first `tested` ratios were tested."""
    c = certify(np.array([0.2, 0.5]), LOSSES, 0.05, 0.1).to_dict()
    pad = 3 - tested
    return {**c, "grid": [0.2, 0.5, 0.8], "empirical_risk": c["empirical_risk"] + [None] * pad,
            "pvalues": c["pvalues"] + [None] * pad, "certified": c["certified"] + [False] * pad,
            "tested": [True] * tested + [False] * pad}


def test_rows_say_which_ratios_were_not_tested():
    rows = certification_rows(_cert_dict())
    assert [r["verdict"] for r in rows] == ["yes", "", "not tested"]
    assert rows[2]["risk"] is None and rows[1]["risk"] == 0.2


def test_ratio_labels_keep_the_digits_a_fine_grid_needs():
    assert [ratio_label(r) for r in (0.3, 0.05, 0.995, 0.0)] == ["0.30", "0.05", "0.995", "0.00"]


def test_rows_without_a_tested_key_are_all_tested():
    d = certify(np.array([0.2, 0.5]), LOSSES, 0.05, 0.1).to_dict()
    assert [r["verdict"] for r in certification_rows(d)] == ["yes", ""]


def test_markdown_lists_every_ratio():
    d = {"input": "m.onnx", "output": "p.onnx", "mode": "unstructured", "settings": {"criterion": "magnitude",
                                                                                    "ratio": 0.2},
         "calibration_data": "c.npz", "evaluation_data": "e.npz", "label_mode": "true", "summary": [],
         "certification": _cert_dict(), "skipped": [], "notes": ["a note"]}
    md = markdown(d, ["certification.png"])
    assert "| 0.20 | 0.0000 | 0.0000 | yes |" in md
    assert "| 0.80 | - | - | not tested |" in md
    assert "- a note" in md and "![certification.png](certification.png)" in md
