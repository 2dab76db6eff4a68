"""Our parameter and MAC counts next to the numbers the papers publish.

    python bench/paper_budgets.py --out docs/paper_budgets.json

Builds each backbone at 112x112 (random weights; counts do not depend on training), counts
it with ``kerasface.budget.count_macs`` and prints a Markdown table of ours vs. published,
with the relative difference. Conventions differ between papers and are stated per row:
MobileFaceNet's "MAdds" and insightface's "GFLOPs" are MACs; LFRC Table 2 and AirFace
Table 4 give FLOPs = 2 x MACs (insightface's counter reports MobileFaceNet as 440M there).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MIB = 2**20

# (name, kwargs, quantity, published value, source). Quantities: "params" (learnable
# weights), "macs", "flops2" (2 x MACs), "size_mib" (float32 weights incl. BN statistics, MiB).
PUBLISHED = [
    ("mobilefacenet", {"embedding_size": 128}, "params", 0.99e6, "MobileFaceNet paper, Table 2 (128-d)"),
    ("mobilefacenet", {"embedding_size": 128}, "macs", 221e6, "MobileFaceNet paper, Table 2 (MAdds)"),
    ("iresnet50", {}, "params", 43.6e6, "insightface arcface_torch model zoo"),
    ("iresnet50", {}, "macs", 6.31e9, "insightface arcface_torch (GFLOPs = MACs)"),
    ("iresnet100", {}, "params", 65.2e6, "insightface arcface_torch model zoo"),
    ("iresnet100", {}, "macs", 12.09e9, "insightface arcface_torch (GFLOPs = MACs)"),
    ("airface", {}, "flops2", 1e9, "AirFace Table 4 ('1G', insightface counter)"),
]
for _step, (_flops, _size) in enumerate(
    [(933.3e6, 18), (1e9, 18), (1e9, 18), (1e9, 19), (998.4e6, 20), (976.6e6, 20)]
):
    _name = "lfrc_se_mobilefacenet" if _step == 5 else f"lfrc_se_mobilefacenet_step{_step}"
    PUBLISHED.append((_name, {}, "flops2", _flops, f"LFRC Table 2 step {_step} FLOPs"))
    PUBLISHED.append((_name, {}, "size_mib", _size, f"LFRC Table 2 step {_step} size ('{_size}M')"))


def measure(name, kwargs):
    from kerasface import backbones
    from kerasface.budget import count_macs

    cost = count_macs(backbones.get(name, **kwargs))
    return {
        "params": cost.trainable_params,
        "macs": cost.macs,
        "flops2": 2 * cost.macs,
        "size_mib": 4 * cost.params / MIB,
        "complete": cost.complete,
    }


def format_value(quantity, value):
    if quantity == "size_mib":
        return f"{value:.2f} MiB"
    return f"{value / 1e9:.3f}G" if value >= 1e9 else f"{value / 1e6:.3f}M"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--names", nargs="+", help="only these backbones")
    args = parser.parse_args(argv)
    cache, rows = {}, []
    for name, kwargs, quantity, published, source in PUBLISHED:
        if args.names and name not in args.names:
            continue
        key = (name, json.dumps(kwargs, sort_keys=True))
        if key not in cache:
            cache[key] = measure(name, kwargs)
        ours = cache[key][quantity]
        rows.append(
            {
                "backbone": name,
                "kwargs": kwargs,
                "quantity": quantity,
                "ours": ours,
                "published": published,
                "difference": ours / published - 1.0,
                "source": source,
                "complete_count": cache[key]["complete"],
            }
        )
    labels = {"params": "params", "macs": "MACs", "flops2": "FLOPs (2 x MACs)", "size_mib": "fp32 size"}
    print("| backbone | quantity | ours | published | difference | source |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['backbone']} | {labels[row['quantity']]} | {format_value(row['quantity'], row['ours'])} "
            f"| {format_value(row['quantity'], row['published'])} | {100 * row['difference']:+.1f}% | {row['source']} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": "python bench/paper_budgets.py " + " ".join(argv or sys.argv[1:]), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
