#!/usr/bin/env python3
"""Optuna side of scripts/bench-tune, and the report of both sides.

  run     (needs optuna) Optuna's TPESampler (defaults, n_startup_trials=10,
          n_ei_candidates=24) and RandomSampler on the functions of
          crates/mlci-tune/examples/bench_functions.rs; prints the same JSON
          lines as that example ("impl": "optuna").
  report  (standard library only) reads both sides' JSON lines and prints the
          table: median best value after given trial counts, and the time to
          suggest one trial after 1000 finished trials.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time


# ---------------------------------------------------------------- functions
def branin(p: dict) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_ALPHA = [1.0, 1.2, 3.0, 3.2]
_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(p: dict) -> float:
    x = [p[f"x{i}"] for i in range(6)]
    return -sum(
        _ALPHA[i] * math.exp(-sum(_A[i][j] * (x[j] - _P[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


def mixed(p: dict) -> float:
    z = (p["z"] - 0.3) ** 2
    branch = p["branch"]
    if branch == "a":
        return 0.3 + (p["xa"] - 2) ** 2 / 10 + z
    if branch == "b":
        return 0.1 * math.log(p["xb"] / 0.01) ** 2 + 0.05 * (p["nb"] - 5) ** 2 + z
    if branch == "c":
        return 0.5 + abs(p["xc"] - 8) / 10 + z
    return 1.5 + z


def suggest(trial, name: str) -> dict:
    """Define-by-run search spaces, the same as the Rust example's."""
    if name == "branin":
        return {"x1": trial.suggest_float("x1", -5, 10), "x2": trial.suggest_float("x2", 0, 15)}
    if name == "hartmann6":
        return {f"x{i}": trial.suggest_float(f"x{i}", 0, 1) for i in range(6)}
    p = {"branch": trial.suggest_categorical("branch", ["a", "b", "c", "d"])}
    p["z"] = trial.suggest_float("z", 0, 1)
    if p["branch"] == "a":
        p["xa"] = trial.suggest_float("xa", -5, 5)
    elif p["branch"] == "b":
        p["nb"] = trial.suggest_int("nb", 1, 16)
        p["xb"] = trial.suggest_float("xb", 1e-4, 1, log=True)
    elif p["branch"] == "c":
        p["xc"] = trial.suggest_int("xc", 0, 20, step=2)
    return p


FUNCTIONS = {"branin": branin, "hartmann6": hartmann6, "mixed": mixed}


# ---------------------------------------------------------------- run
def make_sampler(optuna, name: str, seed: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, n_ei_candidates=24)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name} (tpe, random)")


def run_one(optuna, fname: str, sname: str, seed: int, trials: int) -> list[float]:
    f = FUNCTIONS[fname]
    study = optuna.create_study(direction="minimize", sampler=make_sampler(optuna, sname, seed))
    best, out = math.inf, []
    for _ in range(trials):
        trial = study.ask()
        value = f(suggest(trial, fname))
        study.tell(trial, value)
        best = min(best, value)
        out.append(best)
    return out


def random_params(rng, fname: str) -> dict:
    """A uniform random point of the function's space (for the history)."""
    if fname == "branin":
        return {"x1": rng.uniform(-5, 10), "x2": rng.uniform(0, 15)}
    if fname == "hartmann6":
        return {f"x{i}": rng.uniform(0, 1) for i in range(6)}
    p = {"branch": rng.choice(["a", "b", "c", "d"]), "z": rng.uniform(0, 1)}
    if p["branch"] == "a":
        p["xa"] = rng.uniform(-5, 5)
    elif p["branch"] == "b":
        p["nb"] = rng.randint(1, 16)
        p["xb"] = math.exp(rng.uniform(math.log(1e-4), 0))
    elif p["branch"] == "c":
        p["xc"] = 2 * rng.randint(0, 10)
    return p


def distributions(optuna, fname: str, params: dict) -> dict:
    D = optuna.distributions
    known = {
        "x1": D.FloatDistribution(-5, 10),
        "x2": D.FloatDistribution(0, 15),
        "branch": D.CategoricalDistribution(["a", "b", "c", "d"]),
        "z": D.FloatDistribution(0, 1),
        "xa": D.FloatDistribution(-5, 5),
        "nb": D.IntDistribution(1, 16),
        "xb": D.FloatDistribution(1e-4, 1, log=True),
        "xc": D.IntDistribution(0, 20, step=2),
    }
    if fname == "hartmann6":
        return {k: D.FloatDistribution(0, 1) for k in params}
    return {k: known[k] for k in params}


def overhead(optuna, fname: str, sname: str, history: int, reps: int) -> float:
    """Mean ms of ask + suggestions for one trial after `history` finished trials."""
    rng = random.Random(12345)
    f = FUNCTIONS[fname]
    study = optuna.create_study(direction="minimize", sampler=make_sampler(optuna, sname, 0))
    trials = []
    for _ in range(history):
        p = random_params(rng, fname)
        trials.append(
            optuna.trial.create_trial(params=p, distributions=distributions(optuna, fname, p), value=f(p))
        )
    study.add_trials(trials)

    def once() -> None:
        trial = study.ask()
        suggest(trial, fname)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    once()  # warm-up, as the Rust side
    start = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - start) * 1e3 / max(reps, 1)


def cmd_run(args: argparse.Namespace) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for fname in args.functions.split(","):
        for sname in args.samplers.split(","):
            for seed in range(args.seeds):
                best = run_one(optuna, fname, sname, seed, args.trials)
                line = {"impl": "optuna", "function": fname, "sampler": sname, "seed": seed, "best": best}
                print(json.dumps(line), flush=True)
            if args.overhead_history > 0:
                ms = overhead(optuna, fname, sname, args.overhead_history, args.overhead_reps)
                line = {
                    "impl": "optuna", "function": fname, "sampler": sname,
                    "kind": "overhead", "history": args.overhead_history, "ms": ms,
                }
                print(json.dumps(line), flush=True)


# ---------------------------------------------------------------- report
def load(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def fmt(x: float | None, width: int = 10) -> str:
    if x is None:
        return "-".rjust(width)
    return f"{x:.4g}".rjust(width) if abs(x) < 1e5 else f"{x:.3e}".rjust(width)


def median_diff_ci(a: list[float], b: list[float], reps: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval of median(a) - median(b)."""
    rng = random.Random(0)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(reps)
    )
    return diffs[int(0.025 * reps)], diffs[int(0.975 * reps) - 1]


def cmd_report(args: argparse.Namespace) -> None:
    rows = load(args.inputs)
    at = [int(x) for x in args.at.split(",")]
    runs: dict[tuple, list[list[float]]] = {}
    ms: dict[tuple, float] = {}
    history = None
    for r in rows:
        key = (r["function"], r["sampler"], r["impl"])
        if r.get("kind") == "overhead":
            ms[key] = r["ms"]
            history = r["history"]
        else:
            runs.setdefault(key, []).append(r["best"])
    functions = list(dict.fromkeys(k[0] for k in runs))
    samplers = list(dict.fromkeys(k[1] for k in runs))
    seeds = sorted({len(v) for v in runs.values()})

    def values_at(key: tuple, n: int) -> list[float]:
        return [c[n - 1] for c in runs.get(key, []) if len(c) >= n]

    print(f"median best value (minimised) over {'/'.join(map(str, seeds))} seeds, after N trials;")
    print("diff = mlci - optuna (negative: mlci better), with its 95% bootstrap interval")
    head = (
        f"{'function':<10} {'sampler':<8} {'N':>4} {'mlci':>10} {'optuna':>10} "
        f"{'diff':>9} {'95% interval':>21}  verdict"
    )
    print(head)
    print("-" * len(head))
    for fname in functions:
        for sname in samplers:
            for n in at:
                a, b = values_at((fname, sname, "mlci"), n), values_at((fname, sname, "optuna"), n)
                ma = statistics.median(a) if a else None
                mb = statistics.median(b) if b else None
                diff = interval = verdict = ""
                if a and b:
                    lo, hi = median_diff_ci(a, b)
                    diff = f"{ma - mb:+.4f}"
                    interval = f"[{lo:+.4f}, {hi:+.4f}]"
                    verdict = "better" if hi < 0 else "worse" if lo > 0 else "same (within noise)"
                print(f"{fname:<10} {sname:<8} {n:>4} {fmt(ma)} {fmt(mb)} {diff:>9} {interval:>21}  {verdict}")
    if ms:
        print()
        print(f"suggest overhead: ms to suggest one trial after {history} finished trials (mean)")
        head = f"{'function':<10} {'sampler':<8} {'mlci':>10} {'optuna':>10} {'speed-up':>9}"
        print(head)
        print("-" * len(head))
        for fname in functions:
            for sname in samplers:
                a, b = ms.get((fname, sname, "mlci")), ms.get((fname, sname, "optuna"))
                ratio = f"{b / a:>8.0f}x" if a and b else "-".rjust(9)
                print(f"{fname:<10} {sname:<8} {fmt(a)} {fmt(b)} {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run Optuna's samplers")
    run.add_argument("--trials", type=int, default=100)
    run.add_argument("--seeds", type=int, default=200)
    run.add_argument("--functions", default="branin,hartmann6,mixed")
    run.add_argument("--samplers", default="tpe,random")
    run.add_argument("--overhead-history", type=int, default=1000)
    run.add_argument("--overhead-reps", type=int, default=10)
    rep = sub.add_parser("report", help="print the comparison table")
    rep.add_argument("inputs", nargs="+", help="JSON-lines files from both sides")
    rep.add_argument("--at", default="25,50,100", help="trial counts to report")
    args = ap.parse_args()
    {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
