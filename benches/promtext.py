#!/usr/bin/env python3
"""Reads Prometheus text scraped from tracecheck's /metrics, for the
benchmark scripts.

  promtext.py hist FILE METRIC [--model ID]... [--not-model ID]... [--within S]
      One histogram (METRIC without _bucket), summed over the series
      selected, bucket by bucket (as `sum by (le)` does), printed as
      "count p50_ms p99_ms mean_ms share_within": quantiles interpolated
      within buckets as PromQL's histogram_quantile does, the mean from
      _sum / _count (exact, unlike the quantiles), share_within the share
      of observations <= S seconds (S must be a bucket edge; nan if not).
      Without --model every series counts; --not-model leaves series out.
      Series whose bucket edges differ are refused rather than mixed.
  promtext.py sum FILE METRIC [--model ID]... [--not-model ID]... [--label K=V]...
      The sum of METRIC's samples over the selected series.
  promtext.py spread FILE METRIC [--model ID]... [--not-model ID]...
      The share of observations in each non-empty bucket, "(lo,hi]:share".
  promtext.py buckets FILE METRIC
      Each edge and its cumulative count, one a line (summed over series).

Values with no observation print as nan.
"""

import math
import re
import sys

LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(path):
    """(name, labels dict, value) for every sample line of a file."""
    with open(path, encoding="utf-8") as f:
        yield from parse(f)


def parse(lines):
    """(name, labels dict, value) for every sample line."""
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, _, value_text = rest.rpartition("}")
            labels = {k: v for k, v in LABEL.findall(labels_text)}
        else:
            name, _, value_text = line.partition(" ")
            labels = {}
        value = value_text.strip().split(" ")[0]
        try:
            yield name, labels, float(value)
        except ValueError:
            continue


def selected(labels, models, not_models, pairs):
    if models and labels.get("model") not in models:
        return False
    if labels.get("model") in not_models:
        return False
    return all(labels.get(k) == v for k, v in pairs)


def histogram(path, metric, models=(), not_models=()):
    """Buckets [(le, cumulative count)] summed over series, and sum, count."""
    per_series = {}
    total_sum = total_count = 0.0
    for name, labels, value in samples(path):
        if not selected(labels, models, not_models, ()):
            continue
        if name == metric + "_bucket":
            le = labels.pop("le")
            key = tuple(sorted(labels.items()))
            edge = math.inf if le == "+Inf" else float(le)
            per_series.setdefault(key, {})[edge] = value
        elif name == metric + "_sum":
            total_sum += value
        elif name == metric + "_count":
            total_count += value
    layouts = {tuple(sorted(b)) for b in per_series.values()}
    if len(layouts) > 1:
        sys.exit(f"{metric}: series with different bucket edges; refusing to sum them")
    summed = {}
    for b in per_series.values():
        for edge, count in b.items():
            summed[edge] = summed.get(edge, 0.0) + count
    return sorted(summed.items()), total_sum, total_count


def quantile(q, buckets):
    """histogram_quantile(q, ...) on cumulative buckets sorted by edge."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for i, (edge, count) in enumerate(buckets):
        if count >= rank:
            if edge == math.inf:
                # PromQL: the upper edge of the highest finite bucket.
                return buckets[i - 1][0] if i > 0 else math.nan
            if i == 0 and edge <= 0:
                return edge
            if count == below:
                return edge
            return lower + (edge - lower) * (rank - below) / (count - below)
        lower, below = edge, count
    return math.nan


def options(argv):
    models, not_models, pairs, within = [], [], [], None
    it = iter(argv)
    for arg in it:
        if arg == "--model":
            models.append(next(it))
        elif arg == "--not-model":
            not_models.append(next(it))
        elif arg == "--label":
            k, _, v = next(it).partition("=")
            pairs.append((k, v))
        elif arg == "--within":
            within = float(next(it))
        else:
            sys.exit(f"unknown argument {arg!r}")
    return models, not_models, pairs, within


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    command, path, metric = argv[0:3]
    models, not_models, pairs, within = options(argv[3:])
    if command == "hist":
        buckets, total_sum, count = histogram(path, metric, models, not_models)
        p50, p99 = (quantile(q, buckets) * 1e3 for q in (0.5, 0.99))
        mean = total_sum / count * 1e3 if count else math.nan
        share = math.nan
        if within is not None and count:
            share = next((c / count for e, c in buckets if abs(e - within) < 1e-9), math.nan)
        print(f"{int(count)} {p50:.1f} {p99:.1f} {mean:.1f} {share:.4f}")
    elif command == "sum":
        total = sum(v for n, l, v in samples(path) if n == metric and selected(l, models, not_models, pairs))
        print(f"{total:.0f}")
    elif command == "spread":
        buckets, _, count = histogram(path, metric, models, not_models)
        parts, lower, below = [], 0.0, 0.0
        for edge, c in buckets:
            if c > below and count:
                upper = "inf" if edge == math.inf else f"{edge:g}"
                parts.append(f"({lower:g},{upper}]:{(c - below) / count:.1%}")
            lower, below = edge, c
        print(" ".join(parts) or "-")
    elif command == "buckets":
        buckets, _, _ = histogram(path, metric, models, not_models)
        for edge, count in buckets:
            print(f"{edge} {count:.0f}")
    else:
        sys.exit(__doc__)


def self_test():
    # One series: 10 in (0, 1], 10 in (1, 2]: the median is the edge 1.
    b = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, b) == 1.0
    assert abs(quantile(0.75, b) - 1.5) < 1e-9
    # Above the highest finite edge: that edge, as PromQL answers.
    assert quantile(0.99, [(1.0, 0.0), (math.inf, 5.0)]) == 1.0
    assert math.isnan(quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


if __name__ == "__main__":
    self_test()
    main(sys.argv[1:])
