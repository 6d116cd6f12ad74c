#!/usr/bin/env python3
"""Optuna side of scripts/bench-tune, and the report of both sides.

  run     (needs optuna) Optuna's TPESampler (defaults, n_startup_trials=10,
          n_ei_candidates=24) and RandomSampler on the functions of
          crates/mlci-tune/examples/bench_functions.rs; prints the same JSON
          lines as that example ("impl": "optuna").
  report  reads both sides' JSON lines and prints the tables: median best
          value after given trial counts with bootstrap intervals and
          Holm-corrected verdicts (numpy when importable, else the standard
          library, slower), and the time of one suggestion after the same
          finished trials on both sides.
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


def load_history(path: str) -> list[tuple[dict, float]]:
    """The finished trials the mlci side wrote (bench_functions --history-dir)."""
    with open(path, encoding="utf-8") as f:
        return [(r["params"], r["value"]) for r in map(json.loads, f) if r]


class SamplerClock:
    """Wraps a sampler's suggestion methods and adds up the time spent in them
    (outermost calls only, so a method calling another is counted once)."""

    METHODS = ("before_trial", "infer_relative_search_space", "sample_relative", "sample_independent")

    def __init__(self, sampler) -> None:
        self.seconds = 0.0
        self._depth = 0
        for name in self.METHODS:
            setattr(sampler, name, self._timed(getattr(sampler, name)))

    def _timed(self, method):
        def call(*args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - start

        return call


def overhead(optuna, fname: str, sname: str, history: list[tuple[dict, float]], reps: int) -> dict:
    """Time to suggest trial len(history) + 1, after one warm-up, `reps` times:
    - "ms": the sampler alone (its before_trial, infer_relative_search_space,
      sample_relative and sample_independent calls: what mlci's suggest() does),
      median over the reps;
    - "ms_ask_tell": study.ask() + the suggest_* calls + study.tell() through the
      in-memory storage (the whole Optuna loop around one trial), median.
    Each rep's trial is told FAIL, so the history the sampler sees stays the same."""
    study = optuna.create_study(direction="minimize", sampler=make_sampler(optuna, sname, 0))
    study.add_trials(
        [
            optuna.trial.create_trial(params=p, distributions=distributions(optuna, fname, p), value=v)
            for p, v in history
        ]
    )
    clock = SamplerClock(study.sampler)

    def once() -> tuple[float, float]:
        before = clock.seconds
        start = time.perf_counter()
        trial = study.ask()
        suggest(trial, fname)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return (clock.seconds - before) * 1e3, (time.perf_counter() - start) * 1e3

    once()  # warm-up, as the Rust side
    times = [once() for _ in range(max(reps, 1))]
    alone = [t[0] for t in times]
    whole = [t[1] for t in times]
    return {
        "ms": statistics.median(alone),
        "ms_mean": statistics.fmean(alone),
        "ms_ask_tell": statistics.median(whole),
        "timed": "sampler methods (before_trial, infer_relative_search_space, sample_relative, sample_independent)",
    }


def cmd_run(args: argparse.Namespace) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for fname in args.functions.split(","):
        for sname in args.samplers.split(","):
            for seed in range(args.seeds):
                best = run_one(optuna, fname, sname, seed, args.trials)
                line = {"impl": "optuna", "function": fname, "sampler": sname, "seed": seed, "best": best}
                print(json.dumps(line), flush=True)
            if args.history_dir:
                history = load_history(f"{args.history_dir}/{fname}.jsonl")
                line = {
                    "impl": "optuna", "function": fname, "sampler": sname,
                    "kind": "overhead", "history": len(history), "reps": args.overhead_reps,
                    **overhead(optuna, fname, sname, history, args.overhead_reps),
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


BOOTSTRAP_REPS = 20000
ALPHA = 0.05

# (table title, side a, side b): a side is (impl, sampler).
COMPARISONS = [
    ("mlci vs Optuna, each as shipped (mlci's TPE starts with a Latin hypercube)",
     ("mlci", "tpe"), ("optuna", "tpe")),
    ("", ("mlci", "random"), ("optuna", "random")),
    ("mlci with startup: random (independent start-up draws, as Optuna) vs Optuna",
     ("mlci", "tpe-random-start"), ("optuna", "tpe")),
    ("the Latin-hypercube start alone: mlci tpe (latin_hypercube) vs mlci tpe (random start)",
     ("mlci", "tpe"), ("mlci", "tpe-random-start")),
]


def bootstrap(a: list[float], b: list[float], reps: int = BOOTSTRAP_REPS) -> tuple[float, float, float]:
    """Bootstrap of median(a) - median(b) (the two samples resampled
    independently): the 95% percentile interval and the two-sided p-value of
    "no difference" (twice the smaller tail of the resampled differences at 0)."""
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        rng = np.random.default_rng(0)
        xa, xb = np.asarray(a), np.asarray(b)
        diffs = np.sort(
            np.median(xa[rng.integers(0, len(xa), (reps, len(xa)))], axis=1)
            - np.median(xb[rng.integers(0, len(xb), (reps, len(xb)))], axis=1)
        ).tolist()
    else:
        rng = random.Random(0)
        diffs = sorted(
            statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
            for _ in range(reps)
        )
    lo, hi = diffs[int(0.025 * reps)], diffs[int(0.975 * reps) - 1]
    below = sum(d <= 0 for d in diffs)
    above = sum(d >= 0 for d in diffs)
    p = min(1.0, 2 * (min(below, above) + 1) / (reps + 1))
    return lo, hi, p


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def side_name(side: tuple) -> str:
    return f"{side[0]} {side[1]}"


def cmd_report(args: argparse.Namespace) -> None:
    rows = load(args.inputs)
    at = [int(x) for x in args.at.split(",")]
    runs: dict[tuple, list[list[float]]] = {}
    ms: dict[tuple, dict] = {}
    for r in rows:
        key = (r["function"], r["sampler"], r["impl"])
        if r.get("kind") == "overhead":
            ms[key] = r
        else:
            runs.setdefault(key, []).append(r["best"])
    functions = list(dict.fromkeys(k[0] for k in runs))
    seeds = sorted({len(v) for v in runs.values()})

    def values_at(side: tuple, fname: str, n: int) -> list[float]:
        return [c[n - 1] for c in runs.get((fname, side[1], side[0]), []) if len(c) >= n]

    # Every comparison first, so the correction counts them all.
    tests = []  # (table index, fname, n, a values, b values, lo, hi, p)
    for t, (_, sa, sb) in enumerate(COMPARISONS):
        for fname in functions:
            for n in at:
                a, b = values_at(sa, fname, n), values_at(sb, fname, n)
                if a and b:
                    tests.append([t, fname, n, a, b, *bootstrap(a, b)])
    adjusted = holm([x[7] for x in tests])
    m = len(tests)

    print(f"median best value (minimised) over {'/'.join(map(str, seeds))} seeds, after N trials;")
    print("diff = a - b (negative: a better), its 95% bootstrap interval (not corrected) and the")
    print(f"bootstrap p-value of no difference, Holm-corrected for all {m} comparisons below;")
    print(f"verdict: better/worse when the corrected p < {ALPHA}, else same (within noise)")
    for t, (title, sa, sb) in enumerate(COMPARISONS):
        mine = [(x, q) for x, q in zip(tests, adjusted) if x[0] == t]
        if not mine:
            continue
        if title:
            print()
            print(title)
        head = (
            f"{'function':<10} {'a':<22} {'b':<22} {'N':>4} {'a':>9} {'b':>9} "
            f"{'diff':>9} {'95% interval':>21} {'p(Holm)':>8}  verdict"
        )
        if title:
            print(head)
            print("-" * len(head))
        for (t_, fname, n, a, b, lo, hi, _p), q in mine:
            ma, mb = statistics.median(a), statistics.median(b)
            verdict = ("better" if ma < mb else "worse") if q < ALPHA else "same (within noise)"
            print(
                f"{fname:<10} {side_name(sa):<22} {side_name(sb):<22} {n:>4} {fmt(ma, 9)} {fmt(mb, 9)} "
                f"{ma - mb:>+9.4f} {f'[{lo:+.4f}, {hi:+.4f}]':>21} {q:>8.4f}  {verdict}"
            )
    if ms:
        history = next(iter(ms.values()))["history"]
        reps = sorted({str(r.get("reps", "?")) for r in ms.values()})
        print()
        print(f"suggestion cost: ms to suggest trial {history + 1} after the same {history} finished trials")
        print(f"(median of {'/'.join(reps)} calls after a warm-up; mlci: Sampler::suggest; optuna: the time")
        print("inside the sampler's before_trial, infer_relative_search_space, sample_relative and")
        print("sample_independent during ask() and the suggest_* calls; ask+tell: Optuna's whole loop")
        print("around one trial through its in-memory storage, for context, not compared)")
        head = f"{'function':<10} {'sampler':<8} {'mlci':>10} {'optuna':>10} {'ratio':>8} {'optuna ask+tell':>16}"
        print(head)
        print("-" * len(head))
        for fname in functions:
            for sname in ("tpe", "random"):
                a, b = ms.get((fname, sname, "mlci")), ms.get((fname, sname, "optuna"))
                if not (a or b):
                    continue
                ratio = f"{b['ms'] / a['ms']:>7.0f}x" if a and b and a["ms"] > 0 else "-".rjust(8)
                print(
                    f"{fname:<10} {sname:<8} {fmt(a and a['ms'])} {fmt(b and b['ms'])} {ratio}"
                    f" {fmt(b and b.get('ms_ask_tell'), 16)}"
                )
        print("(ratio = optuna / mlci: how many times cheaper mlci's suggestion is)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run Optuna's samplers")
    run.add_argument("--trials", type=int, default=100)
    run.add_argument("--seeds", type=int, default=200)
    run.add_argument("--functions", default="branin,hartmann6,mixed")
    run.add_argument("--samplers", default="tpe,random")
    run.add_argument(
        "--history-dir",
        help="folder of <function>.jsonl histories (from bench_functions --history-dir) "
        "to time one suggestion after; none: skip the timing",
    )
    run.add_argument("--overhead-reps", type=int, default=20)
    rep = sub.add_parser("report", help="print the comparison table")
    rep.add_argument("inputs", nargs="+", help="JSON-lines files from both sides")
    rep.add_argument("--at", default="25,50,100", help="trial counts to report")
    args = ap.parse_args()
    {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
