"""Render the Grafana dashboard's panels to docs/dashboard.png from real scraped data.

The data comes from the end-to-end Prometheus test, which runs sandbox jobs (a real trainer), scrapes
the operator and the trainer with the real Prometheus and, when FINETUNE_DASHBOARD_DATA names a file,
saves every panel's query results over the run:

    FINETUNE_DASHBOARD_DATA=/tmp/dashboard.json .venv/bin/python -m pytest tests/e2e/test_prometheus_e2e.py
    .venv/bin/python docs/render_dashboard.py /tmp/dashboard.json docs/dashboard.png

Needs matplotlib (`pip install matplotlib`); Grafana itself is not packaged anywhere reachable here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or labels.get(
        "__name__", ""
    )


def render(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in data["panels"] if p["type"] != "row"]
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.2 * rows))
    start = data["start"]
    for axis, panel in zip(axes.flat, panels):
        axis.set_title(panel["title"], fontsize=10, loc="left")
        drawn = False
        for line in panel["lines"]:
            points = [(t - start, v) for t, v in line["values"] if not math.isnan(v)]
            if not points:
                continue
            xs, ys = zip(*points)
            axis.plot(xs, ys, label=legend(line["legend"], line["labels"])[:40], linewidth=1.4)
            drawn = True
        if drawn:
            axis.legend(fontsize=7, loc="best")
        else:
            axis.text(
                0.5,
                0.5,
                "no data (needs a GPU)" if "GPU" in panel["title"] else "no data",
                ha="center",
                va="center",
                transform=axis.transAxes,
                color="grey",
            )
        axis.set_xlabel("seconds into the run", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle("finetune-operator dashboard — sandbox run scraped by Prometheus", fontsize=13)
    figure.tight_layout()
    figure.savefig(out, dpi=80)


if __name__ == "__main__":
    render(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
