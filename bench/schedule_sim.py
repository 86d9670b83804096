"""How much a persistent CTA that draws its next tile at a tile's start loses to one that draws
when it is free (the hardware's order for a CTA per tile), for causal forwards: list scheduling
of the tiles in the tile scheduler's order (heads in groups, each group's blocks from the
heaviest) on 132 CTAs; a tile costs its key blocks plus a fixed 1.5 (its Q, first K/V and
epilogue). Prints makespans in block units against the ideal (total / CTAs). CPU only.

    python bench/schedule_sim.py
"""
import heapq

CTAS, FIXED = 132, 1.5


def tiles(n_blocks, heads, group):
    out = []
    for first in range(0, heads, group):
        size = min(group, heads - first)
        out += [n_blocks - i // size + FIXED for i in range(n_blocks * size)]
    return out


def draw_when_free(costs):
    free = [0.0] * CTAS
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free)


def draw_at_start(costs):
    starts = [(0.0, w, w) for w in range(CTAS)]  # (time CTA w starts tile i, w, i)
    heapq.heapify(starts)
    drawn, end = CTAS, 0.0
    while starts:
        t, w, i = heapq.heappop(starts)
        if i >= len(costs):
            end = max(end, t)
            continue
        heapq.heappush(starts, (t + costs[i], w, drawn))  # drawn now, run after tile i
        drawn += 1
    return end


for name, n_blocks, heads, group in [("causal 16k, 128-row tiles, 16 heads", 128, 16, 1),
                                     ("causal 4k, B4 x 16 heads, groups of 4", 32, 64, 4)]:
    costs = tiles(n_blocks, heads, group)
    ideal = sum(costs) / CTAS
    a, b = draw_when_free(costs), draw_at_start(costs)
    print(f"{name}: ideal {ideal:.0f}, drawn when free {a:.0f} ({a / ideal:.3f}), "
          f"drawn at a tile's start {b:.0f} ({b / ideal:.3f})")
