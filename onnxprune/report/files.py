"""The report folder of `compress --report`: report.json, the PNGs, and report.md linking them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .plots import plots
from .tables import markdown

if TYPE_CHECKING:
    from ..workflows.compress import CompressResult


def write(r: CompressResult, folder: str | Path) -> list[Path]:
    """report.json, the PNGs and report.md (in that order); returns the files written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    d = r.to_dict()
    files = [out / "report.json"]
    files[0].write_text(json.dumps(d, indent=2, sort_keys=False, default=float) + "\n")
    files += plots(r, d, out)
    md = out / "report.md"
    md.write_text(markdown(d, [f.name for f in files if f.suffix == ".png"]))
    return files + [md]
