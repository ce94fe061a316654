#!/usr/bin/env python3
"""Summarises `cargo bench --bench pipeline` for BENCHMARKS.md.

Reads criterion's results (target/criterion/<bench>/new/{estimates,benchmark}.json,
or the directory given as the first argument) and prints a Markdown table of
time per iteration, per span and per trace, then the issue's target: CPU per
span with 1000 models against 10 models, for the evaluation alone and for the
daemon's per-span pipeline (lazy walk + assemble + build trace + evaluate).

Times are criterion's median sample (robust against other processes on a
shared machine), with the 95% confidence interval of the mean in brackets and
the fastest decile of samples (the least disturbed by neighbours); the paired
ratio the bench saves in paired_ratio.json is printed last.
"""

import json
import os
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
TRACES_PER_ITER = 32  # benches/pipeline.rs TRACES_PER_ITER
# TrafficMix::default(): 90 web traces for 10 bank traces.
MIX = {"web": 0.9, "bank": 0.1}


def load():
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(dirpath, "sample.json")) as f:
            sample = json.load(f)
        per_iter = sorted(t / i for t, i in zip(sample["times"], sample["iters"]))
        out[meta["full_id"]] = {
            "median": est["median"]["point_estimate"],
            "mean_lo": est["mean"]["confidence_interval"]["lower_bound"],
            "mean_hi": est["mean"]["confidence_interval"]["upper_bound"],
            "p10": per_iter[len(per_iter) // 10],
            "elements": (meta.get("throughput") or {}).get("Elements"),
        }
    return out


def fmt(ns):
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return f"{ns / size:.3g} {unit}" if ns / size < 100 else f"{ns / size:.0f} {unit}"
    return f"{ns:.3g} ns"


ORDER = ["decode", "assemble", "build_trace", "evaluate"]


def main():
    r = load()
    if not r:
        sys.exit(f"no criterion results under {ROOT}: run `cargo bench --bench pipeline` first")
    ids = sorted(r, key=lambda i: (ORDER.index(i.split("/")[0]) if i.split("/")[0] in ORDER else 99,
                                   i.split("/")[1],
                                   int(i.split("/")[-1]) if i.split("/")[-1].isdigit() else i))
    print("| benchmark | per iteration: median [mean 95% CI] | fastest 10% | spans/iter | per span | per trace |")
    print("|---|---|---|---|---|---|")
    for i in ids:
        b = r[i]
        per_trace = "—"
        if i.startswith(("evaluate/", "build_trace/")):
            per_trace = fmt(b["median"] / TRACES_PER_ITER)
        n = b["elements"] or 1
        print(f"| `{i}` | {fmt(b['median'])} [{fmt(b['mean_lo'])} – {fmt(b['mean_hi'])}] "
              f"| {fmt(b['p10'])} | {n} | {fmt(b['median'] / n)} | {per_trace} |")

    print()
    print("CPU per span, 1000 models against 10 models (target: ratio ≤ 3):")
    ratios = {}
    for kind in ("bank", "web"):
        ten, thousand = r.get(f"evaluate/{kind}/10"), r.get(f"evaluate/{kind}/1000")
        if ten and thousand:
            ratios[kind] = thousand["median"] / ten["median"]
            print(f"- evaluation only, {kind} traces: {fmt(thousand['median'] / thousand['elements'])}"
                  f" / {fmt(ten['median'] / ten['elements'])} per span = {ratios[kind]:.2f}x"
                  f" (fastest 10%: {thousand['p10'] / ten['p10']:.2f}x)")

    def per_span_mix(models):
        """Evaluation CPU per span over the default mix of traces."""
        ns = spans = 0.0
        for kind, w in MIX.items():
            b = r.get(f"evaluate/{kind}/{models}")
            if not b:
                return None
            ns += w * b["median"] / TRACES_PER_ITER
            spans += w * b["elements"] / TRACES_PER_ITER
        return ns / spans

    def per_span_stage(*ids_):
        total = 0.0
        for i in ids_:
            b = r.get(i)
            if not b:
                return None
            total += b["median"] / b["elements"]
        return total

    e10, e1000 = per_span_mix(10), per_span_mix(1000)
    if e10 and e1000:
        print(f"- evaluation only, default mix (90% web / 10% bank traces): "
              f"{fmt(e1000)} / {fmt(e10)} per span = {e1000 / e10:.2f}x")
        # Build trace, weighted the same way.
        b_web = r.get("build_trace/from_raw_spans/web")
        b_bank = r.get("build_trace/from_raw_spans/bank")
        rest = per_span_stage("decode/lazy_walk", "assemble/insert_poll")
        if b_web and b_bank and rest is not None:
            build = (MIX["web"] * b_web["median"] + MIX["bank"] * b_bank["median"]) / (
                MIX["web"] * b_web["elements"] + MIX["bank"] * b_bank["elements"])
            p10, p1000 = rest + build + e10, rest + build + e1000
            print(f"- daemon pipeline per span (lazy walk + assemble + build trace + evaluate), "
                  f"default mix: {fmt(p1000)} / {fmt(p10)} = {p1000 / p10:.2f}x")

    paired = os.path.join(ROOT, "paired_ratio.json")
    if os.path.exists(paired):
        with open(paired) as f:
            p = json.load(f)
        print(f"- **paired** (10 and 1000 models alternated, median of {p['rounds']} rounds), evaluation only: "
              f"bank {p['bank']:.2f}x, web {p['web']:.2f}x, default mix **{p['mix']:.2f}x**")
        if "web_10_ns_per_span" in p:
            def mix_ns(models):
                ns = spans = 0.0
                for kind, w in MIX.items():
                    n = p[f"{kind}_spans_per_trace"]
                    ns += w * n * p[f"{kind}_{models}_ns_per_span"]
                    spans += w * n
                return ns / spans
            m10, m1000 = mix_ns(10), mix_ns(1000)
            print(f"  - paired CPU per span, default mix: 1000 models {fmt(m1000)}, 10 models {fmt(m10)}")
            b_web = r.get("build_trace/from_raw_spans/web")
            b_bank = r.get("build_trace/from_raw_spans/bank")
            rest = per_span_stage("decode/lazy_walk", "assemble/insert_poll")
            if b_web and b_bank and rest is not None:
                build = (MIX["web"] * b_web["median"] + MIX["bank"] * b_bank["median"]) / (
                    MIX["web"] * b_web["elements"] + MIX["bank"] * b_bank["elements"])
                print(f"  - with the other stages' medians added (lazy walk + assemble + build trace, "
                      f"{fmt(rest + build)} per span): daemon pipeline "
                      f"{fmt(rest + build + m1000)} / {fmt(rest + build + m10)} = "
                      f"{(rest + build + m1000) / (rest + build + m10):.2f}x")


if __name__ == "__main__":
    main()
