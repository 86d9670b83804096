"""Summarizes `ncu --page source --print-source sass --csv` (bench/profile_bwd.sh): the stall
samples summed per column, and the hottest instructions with their neighbours' opcodes.

    python bench/ncu_stalls.py ncu_bwd_source.csv [top]
"""
import csv
import sys


def number(x):
    try:
        return float(x.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


rows = list(csv.reader(open(sys.argv[1], errors="replace")))
head = next(i for i, r in enumerate(rows) if any("Source" == c.strip() for c in r))
cols, body = rows[head], [r for r in rows[head + 1:] if len(r) == len(rows[head])]
print("columns:", " | ".join(cols))
src = cols.index("Source")
sample_cols = [i for i, c in enumerate(cols) if "Sampl" in c or "stall" in c.lower()]
if not sample_cols:
    sys.exit("no stall-sample columns")
total = {i: sum(number(r[i]) for r in body) for i in sample_cols}
for i in sample_cols:
    print(f"{cols[i]:60s} {total[i]:12.0f}")
key = sample_cols[0]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
order = sorted(range(len(body)), key=lambda j: -number(body[j][key]))[:top]
print(f"\nhottest by {cols[key]} (share of all samples, instruction, what precedes it)")
for j in sorted(order):
    share = number(body[j][key]) / max(total[key], 1)
    prev = "; ".join(body[k][src].split(" ")[0] for k in range(max(0, j - 3), j))
    extra = " ".join(f"{cols[i][:18]}={number(body[j][i]):.0f}" for i in sample_cols[1:4])
    print(f"{j:5d} {share:6.1%}  {body[j][src][:70]:70s} [{prev}] {extra}")
