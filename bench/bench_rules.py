"""Rule-core micro-benchmark: evaluations per second and the cost of the index.

    python bench/bench_rules.py [--rules 10000] [--repeat 7]

Builds N rules with one `equals` criterion each and measures, in one run:
  * single-criterion evaluations per second (one rule evaluated in a loop);
  * ruleset.match on a set of N rules where exactly one is a candidate (indexed by
    webhook name), relative to the same match on a 1-rule set (the index's cost);
  * ruleset.match on a set of N rules that are all candidates (evaluations per second).
Each figure is the median of --repeat runs; ratios come from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from engine.rules import RuleSet, load_rule


def make_rule(index: int, url: str):
    return load_rule(
        {
            "name": f"rule_{index}",
            "pack": "bench",
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": url}},
            "criteria": {"trigger.body.repo.name": {"type": "equals", "pattern": f"repo-{index}"}},
            "action": {"ref": "core.noop"},
        }
    )


def per_second(func, iterations: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(iterations):
            func()
        samples.append(iterations / (time.perf_counter() - start))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.rules

    payload = {"headers": {}, "body": {"repo": {"name": "repo-0"}}}
    one_rule = make_rule(0, "hook-0")
    single = per_second(
        lambda: one_rule.evaluate(payload, stop_on_failure=True), 200_000, args.repeat
    )

    indexed = RuleSet([make_rule(i, f"hook-{i}") for i in range(n)])
    tiny = RuleSet([one_rule])
    match_tiny = per_second(
        lambda: tiny.match("core.st2.webhook", payload, "hook-0"), 100_000, args.repeat
    )
    match_indexed = per_second(
        lambda: indexed.match("core.st2.webhook", payload, "hook-0"), 100_000, args.repeat
    )

    all_candidates = RuleSet([make_rule(i, "shared") for i in range(n)])
    full_matches = per_second(
        lambda: all_candidates.match("core.st2.webhook", payload, "shared"), 20, args.repeat
    )

    print(f"rules loaded: {n}; median of {args.repeat} runs")
    print(f"single-criterion evaluations/s (1 rule):          {single:>12,.0f}")
    print(f"match/s, 1-rule set:                              {match_tiny:>12,.0f}")
    print(f"match/s, {n} rules, 1 candidate (index):     {match_indexed:>12,.0f}")
    print(f"  cost ratio indexed / 1-rule set:                {match_tiny / match_indexed:>12.2f}x")
    print(f"match/s, {n} rules, all candidates:          {full_matches:>12,.1f}")
    print(f"  = evaluations/s across all candidates:          {full_matches * n:>12,.0f}")


if __name__ == "__main__":
    main()
