"""Helpers of scripts/bench-goal: the per-seed spec, mlci's result from its experiment
JSON, and the final table. Runs under the benchmark's virtualenv (PyYAML).

  seed-spec  write the spec of one seed (sampler and training seed, data, wall budget)
  mlci       one JSON line of mlci's result, from `mlci experiments show ID --json`
  line       one result line, readable
  table      per-seed rows, medians and ratios of both sides
"""

import argparse
import json
import math
import statistics
import sys

import yaml


def cmd_seed_spec(args):
    with open(args.spec) as f:
        spec = yaml.safe_load(f)
    spec["seed"] = args.seed
    model = spec.setdefault("trial", {}).setdefault("model", {})
    model.setdefault("training", {})["seed"] = args.seed
    spec.setdefault("dataset", {})["path"] = args.data
    spec.setdefault("budget", {})["max_wall_seconds"] = args.max_wall_seconds
    with open(args.out, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)


def cmd_mlci(args):
    with open(args.experiment) as f:
        shown = json.load(f)
    exp = shown.get("experiment", shown)
    trials = shown.get("trials", [])
    events = shown.get("events", [])
    goal_at = next((e["at"] for e in events if e["kind"] == "goal_met"), None)
    evaluation = exp.get("evaluation") or {}
    test = evaluation.get("test") or {}
    winner = next((t for t in trials if t["number"] == evaluation.get("trial")), None)
    spec = exp.get("spec", {})
    out = {
        "side": "mlci",
        "version": args.version,
        "seed": args.seed,
        "threads": args.threads,
        "goal": spec.get("objective", {}).get("goal"),
        "goal_met": goal_at is not None,
        "seconds_to_goal": None if goal_at is None else goal_at - args.start,
        "seconds_total": args.end - args.start,
        "trials": len(trials),
        "trials_completed": sum(t["state"] == "completed" for t in trials),
        "trials_pruned": sum(t["state"] == "pruned" for t in trials),
        "trials_failed": sum(t["state"] == "failed" for t in trials),
        "epochs_trained": sum(len(t.get("steps", [])) for t in trials),
        "winner": None
        if winner is None
        else {
            "number": winner["number"],
            "epochs": len(winner.get("steps", [])),
            "val_accuracy": winner.get("value"),
            "params": winner.get("params"),
        },
        "test_accuracy": test.get("accuracy"),
        "test_correct": test.get("correct"),
        "test_images": test.get("images"),
        "test_interval": [test["interval"]["low"], test["interval"]["high"]] if test else None,
        "peak_rss_mb": args.maxrss_kb / 1024,
    }
    print(json.dumps(out))


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def describe(r):
    goal = (
        f"goal met in {r['seconds_to_goal']:.0f} s"
        if r.get("goal_met")
        else f"goal NOT met in {r['seconds_total']:.0f} s"
    )
    interval = r.get("test_interval") or [None, None]
    return (
        f"{r['side']} seed {r['seed']}: {goal}, {r['trials']} trials, {r['epochs_trained']} epochs, "
        f"peak {fmt(r.get('peak_rss_mb'), '.0f')} MB, test accuracy {fmt(r.get('test_accuracy'), '.3f')} "
        f"[{fmt(interval[0], '.3f')}, {fmt(interval[1], '.3f')}] on {r.get('test_images')} images"
    )


def cmd_line(_args):
    for line in sys.stdin:
        if line.strip():
            print(describe(json.loads(line)))


def cmd_table(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    sides = []
    for r in rows:
        if r["side"] not in sides:
            sides.append(r["side"])
    header = (
        f"{'side':<16}{'seed':>5}{'goal':>6}{'to goal s':>11}{'total s':>9}{'trials':>8}"
        f"{'epochs':>8}{'peak MB':>9}{'test acc':>10}  95% interval"
    )
    print(header)
    print("-" * (len(header) + 16))
    medians = {}
    for side in sides:
        mine = [r for r in rows if r["side"] == side]
        for r in mine:
            lo, hi = r.get("test_interval") or [None, None]
            print(
                f"{side:<16}{r['seed']:>5}{'met' if r['goal_met'] else 'no':>6}"
                f"{fmt(r.get('seconds_to_goal'), '.0f'):>11}{r['seconds_total']:>9.0f}{r['trials']:>8}"
                f"{r['epochs_trained']:>8}{fmt(r.get('peak_rss_mb'), '.0f'):>9}"
                f"{fmt(r.get('test_accuracy'), '.3f'):>10}  [{fmt(lo, '.3f')}, {fmt(hi, '.3f')}]"
            )
        # A run that missed the goal counts as its whole budget (a lower bound of its time).
        to_goal = [r["seconds_to_goal"] if r["goal_met"] else math.inf for r in mine]
        med = statistics.median(to_goal)
        medians[side] = med
        accs = [r["test_accuracy"] for r in mine if r.get("test_accuracy") is not None]
        print(
            f"{side:<16}{'med':>5}{sum(r['goal_met'] for r in mine):>4}/{len(mine)}"
            f"{fmt(med if math.isfinite(med) else None, '.0f', 'not met'):>11}"
            f"{statistics.median(r['seconds_total'] for r in mine):>9.0f}"
            f"{statistics.median(r['trials'] for r in mine):>8.0f}"
            f"{statistics.median(r['epochs_trained'] for r in mine):>8.0f}"
            f"{fmt(statistics.median(r['peak_rss_mb'] for r in mine), '.0f'):>9}"
            f"{fmt(statistics.median(accs) if accs else None, '.3f'):>10}"
        )
    if "mlci" in medians and len(medians) > 1:
        for side, med in medians.items():
            if side == "mlci":
                continue
            m = medians["mlci"]
            if math.isfinite(m) and math.isfinite(med):
                print(f"median time to goal, {side} / mlci: {med / m:.2f} (>1 means mlci reaches the goal sooner)")
            else:
                print(f"median time to goal, {side} / mlci: not comparable (a median run missed the goal)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed-spec")
    s.add_argument("--spec", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--max-wall-seconds", type=int, required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("mlci")
    s.add_argument("--experiment", required=True)
    s.add_argument("--start", type=float, required=True)
    s.add_argument("--end", type=float, required=True)
    s.add_argument("--maxrss-kb", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, required=True)
    s.add_argument("--version", required=True)
    sub.add_parser("line")
    s = sub.add_parser("table")
    s.add_argument("results")
    args = p.parse_args()
    {
        "seed-spec": cmd_seed_spec,
        "mlci": cmd_mlci,
        "line": cmd_line,
        "table": cmd_table,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
