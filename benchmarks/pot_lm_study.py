"""The attack suite on tiny-lm across seeds: `python -m benchmarks.pot_lm_study [--seeds 3] [--out DIR]`
(the same as `fpcore pot eval --task tiny-lm`, at this study's size: 128 KiB of the documentation, 256
AdamW steps, a checkpoint every 4). Writes DIR/lm_study.json (default docs/pot)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fpcore.pot.evaluate_task import evaluate_task
from fpcore.pot.tasks import TinyLM

CONFIG = {"corpus_bytes": 131072, "warmup": 16}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="docs/pot")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    doc = evaluate_task(TinyLM(CONFIG), args.seeds, log=print)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_study.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
