#!/usr/bin/env python3
r"""Optuna + PyTorch side of scripts/bench-goal: time to the goal of a whole search.

Reads mlci's experiment YAML (the same file `mlci tune` reads) and runs what a user
would write instead of mlci: Optuna (TPESampler + MedianPruner or
SuccessiveHalvingPruner) driving the same CNN in PyTorch on the CPU, on the same
search space, the same images, the same budget. It times, from its start, how long
until a trial first reaches the goal (objective.goal on val_accuracy), then
evaluates the chosen model once on the held-out test images and writes one JSON file.

  run       the benchmark (see --help of `run`)
  selftest  checks of the pieces that must match mlci: the batched augmentation
            against a direct per-pixel implementation, the test-split carve, the
            parameter application order, the learning-rate schedule, the Wilson
            interval, the network's shapes and parameter count

Usage:
  python scripts/bench_goal_torch.py run --spec examples/experiment.yaml --data DIR \
      --seed N --threads 2 [--limit N] [--max-epochs N] [--max-wall-seconds S] \
      [--no-enqueue-base] --out FILE.json
  python scripts/bench_goal_torch.py selftest
Exit 0 once the JSON is written (goal met or not), 2 on a bad argument, spec or data
set (the message names the key or path), 1 when a self-test check fails.

Environment: a virtualenv with torch 2.15.0 (CPU use), numpy, Pillow, optuna==5.0.0
and PyYAML. scripts/bench-goal creates it as scripts/bench-train's ensure_torch does
(same pins), plus a third pip command for Optuna and PyYAML; $venv = .venv-bench:

  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      filelock "typing-extensions>=4.13.0" "setuptools>=77.0.3" "sympy>=1.13.3" \
      "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" pillow numpy
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      --no-warn-conflicts "torch==2.15.0" \
      nvidia-cuda-runtime==13.2.86 nvidia-cublas==13.4.1.3 nvidia-cuda-cupti==13.2.86 \
      nvidia-cuda-nvrtc==13.2.86 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 \
      nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37 nvidia-cudnn-cu13==9.26.0.51 \
      nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "optuna==5.0.0" pyyaml
  "$venv/bin/python" -c 'import torch, PIL, numpy, optuna, yaml'   # the "installed?" check

(the first two are bench-train's torch_py_deps and torch lines; the third brings
optuna 5.0.0 with alembic, sqlalchemy, colorlog, tqdm, packaging, and PyYAML 6.0.x.
An existing .venv-bench from bench-train only needs the third.)

The JSON (--out): side ("optuna+pytorch"), torch, optuna, seed, threads, torch_threads
(per trial), parallel_trials, limit, max_epochs, max_wall_seconds, goal, goal_met,
seconds_to_goal (null unless met), seconds_total (to after the test evaluation),
seconds_search, seconds_decoding (training + validation images, every size used),
seconds_test (decoding + evaluating the test images), seconds_imports (interpreter,
torch and optuna imports: before the clock), stop_reason, train_images,
validation_images, trials (started), trials_completed, trials_pruned, trials_failed
(infeasible, diverged or crashed), trials_stopped (cut by the wall budget or by another
trial's goal), epochs_trained, winner {number (Optuna's, from 0: mlci counts from 1),
epoch, val_accuracy, params, param_count}, test_accuracy, test_correct, test_images,
test_interval [low, high] (Wilson, 95%), peak_rss_mb, trial_peak_rss_mb (by trial
number), trial_details [{number, state, epochs, best_val_accuracy, params, seconds}].
The clock starts after argument parsing and the torch and optuna imports, before the
spec is read and the images listed and decoded. Progress goes to stderr, one line per
epoch: "trial 3 epoch 5 val_accuracy 0.7215 (42.1 s)" (seconds on the clock).

Budget as mlci: budget.max_trials, parallel_trials (threads split between them),
max_wall_seconds (Optuna's timeout, and a running trial stops at its next epoch end),
max_failed_trials (more failed trials than that, and no goal: the search stops).
After a trial meets the goal, the others stop at their next epoch end.

What matches mlci, and where it cannot (also in the report of the change):
- model, initialisation (Glorot uniform, zero biases), batch norm (Keras momentum
  0.99 and eps 1e-3), dropout, loss with label smoothing, optimizers with Keras'
  defaults (eps 1e-7, RMSprop rho 0.9), warm-up and cosine schedule per update,
  augmentation (Keras ImageDataGenerator's affine map, nearest fill, bilinear),
  decoding (PIL bilinear = image's triangle filter), the test carve (SHA-256 of
  file names), validation batches of 128, the goal rule (incl. objective.confidence);
- the random streams differ (torch's generators, not mlci's PCG64), so the same seed
  gives other draws; the TPE start-up trials are Optuna's independent random draws
  (mlci's default is a Latin hypercube); the median rule is Optuna's MedianPruner
  (mlci's compares best-so-far values of every trial that reached the epoch);
  batch-norm running variance is torch's unbiased one (mlci: biased, n >= 8k here).
- early_stopping warmup_epochs W: mlci never prunes at epochs <= W; Optuna's
  n_warmup_steps prunes from step == n_warmup_steps on, so with epochs reported as
  steps 1, 2, ... this passes n_warmup_steps = W + 1 (the same protected epochs).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import threading
import time

_PROCESS_T0 = time.perf_counter()

SIDE = "optuna+pytorch"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
EVAL_BATCH = 128  # mlci-train's EVAL_BATCH
WILSON_Z95 = 1.959963984540054
BN_MOMENTUM_TORCH = 0.01  # Keras/mlci momentum 0.99
BN_EPS = 1e-3
ADAM_BETAS = (0.9, 0.999)
OPT_EPS = 1e-7
RMSPROP_RHO = 0.9

# mlci's ModelSpec limits (mlci_core::spec::limits)
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 4, 512
MAX_FILTERS, MAX_KERNEL, MAX_UNITS, MAX_BATCH, MAX_EPOCHS = 4096, 15, 65536, 4096, 10000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BadInput(Exception):
    """A bad argument, spec or data set: exit 2 with the message (naming the key/path)."""


class SpecProblem(Exception):
    """A model spec that is not a valid model; `field` names the spec field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class Infeasible(Exception):
    """A trial whose parameters make no valid model: failed, never trained."""


class Diverged(Exception):
    """A trial whose loss became NaN or infinite: failed."""


class Crashed(Exception):
    """A trial that raised an error while training (e.g. out of memory): failed."""


# ================================================================ the model spec
PADDINGS = ("valid", "same")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")
AUG_FLOATS = ("rotation", "width_shift", "height_shift", "shear", "zoom")
AUG_LIMITS = {"rotation": 180.0, "width_shift": 1.0, "height_shift": 1.0, "shear": 89.0, "zoom": 0.99}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fields(obj, where: str, known: dict) -> dict:
    """Check a mapping's fields (unknown ones are errors, as mlci's serde) and types."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: must be a mapping, got {type(obj).__name__}")
    for k, v in obj.items():
        if k not in known:
            raise BadInput(f"{where}.{k}: unknown field (known: {', '.join(known)})")
        kind = known[k]
        ok = {
            "int": _is_int(v),
            "num": _is_num(v),
            "bool": isinstance(v, bool),
            "str": isinstance(v, str),
            "any": True,
        }[kind]
        if not ok:
            raise BadInput(f"{where}.{k}: expected {kind}, got {v!r}")
    return obj


def parse_model(obj, where: str = "trial.model") -> dict:
    """mlci's ModelSpec from YAML, with its defaults, as a plain dict."""
    top = _fields(
        obj,
        where,
        {"input_size": "int", "conv_blocks": "any", "dense": "any", "augmentation": "any", "training": "any"},
    )
    spec = {
        "input_size": top.get("input_size", 64),
        "conv_blocks": [],
        "dense": [],
        "augmentation": {k: 0.0 for k in AUG_FLOATS} | {"horizontal_flip": False},
        "training": {
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "weight_decay": 0.0,
            "momentum": 0.9,
            "batch_size": 32,
            "epochs": 10,
            "lr_schedule": "constant",
            "warmup_epochs": 0.0,
            "label_smoothing": 0.0,
            "early_stopping": None,
        },
    }
    blocks = top.get("conv_blocks")
    if blocks is None:
        blocks = [{"filters": f} for f in (32, 64, 128)]
    if not isinstance(blocks, list):
        raise BadInput(f"{where}.conv_blocks: must be a list")
    for i, b in enumerate(blocks):
        w = f"{where}.conv_blocks[{i}]"
        b = _fields(b, w, {"filters": "int", "kernel_size": "int", "padding": "str", "batch_norm": "bool"})
        if "filters" not in b:
            raise BadInput(f"{w}.filters: missing")
        padding = b.get("padding", "valid")
        if padding not in PADDINGS:
            raise BadInput(f"{w}.padding: expected valid or same, got {padding!r}")
        spec["conv_blocks"].append(
            {
                "filters": b["filters"],
                "kernel_size": b.get("kernel_size", 3),
                "padding": padding,
                "batch_norm": b.get("batch_norm", False),
            }
        )
    dense = top.get("dense")
    if dense is None:
        dense = [{"units": 128, "dropout": 0.5}]
    if not isinstance(dense, list):
        raise BadInput(f"{where}.dense: must be a list")
    for i, d in enumerate(dense):
        w = f"{where}.dense[{i}]"
        d = _fields(d, w, {"units": "int", "dropout": "num"})
        if "units" not in d:
            raise BadInput(f"{w}.units: missing")
        spec["dense"].append({"units": d["units"], "dropout": float(d.get("dropout", 0.0))})
    aug = _fields(
        top.get("augmentation"),
        f"{where}.augmentation",
        {k: "num" for k in AUG_FLOATS} | {"horizontal_flip": "bool"},
    )
    for k, v in aug.items():
        spec["augmentation"][k] = v if isinstance(v, bool) else float(v)
    tr = _fields(
        top.get("training"),
        f"{where}.training",
        {
            "optimizer": "str",
            "learning_rate": "num",
            "weight_decay": "num",
            "momentum": "num",
            "batch_size": "int",
            "epochs": "int",
            "seed": "int",  # ignored: --seed wins
            "early_stopping": "any",
            "lr_schedule": "str",
            "warmup_epochs": "num",
            "label_smoothing": "num",
        },
    )
    t = spec["training"]
    for k, v in tr.items():
        if k == "seed":
            continue
        if k in ("optimizer", "lr_schedule"):
            allowed = OPTIMIZERS if k == "optimizer" else SCHEDULES
            if v.lower() not in allowed:
                raise BadInput(f"{where}.training.{k}: unknown {v!r} (expected {', '.join(allowed)})")
            v = v.lower()
        elif k == "early_stopping":
            if v is not None:
                es = _fields(
                    v,
                    f"{where}.training.early_stopping",
                    {"patience": "int", "monitor": "str", "min_delta": "num"},
                )
                if "patience" not in es:
                    raise BadInput(f"{where}.training.early_stopping.patience: missing")
                monitor = es.get("monitor", "val_accuracy")
                if monitor not in ("val_accuracy", "val_loss"):
                    raise BadInput(f"{where}.training.early_stopping.monitor: expected val_accuracy or val_loss")
                v = {"patience": es["patience"], "monitor": monitor, "min_delta": float(es.get("min_delta", 0.0))}
        elif k in ("learning_rate", "weight_decay", "momentum", "warmup_epochs", "label_smoothing"):
            v = float(v)
        t[k] = v
    return spec


def check_model(spec: dict) -> tuple[int, int]:
    """mlci's ModelSpec::architecture for two classes: SpecProblem naming the field,
    else (flattened width, trainable parameter count)."""

    def rng(field, v, lo, hi):
        if not (lo <= v <= hi):
            raise SpecProblem(field, f"must be between {lo} and {hi}, got {v}")

    rng("input_size", spec["input_size"], MIN_INPUT_SIZE, MAX_INPUT_SIZE)
    if not spec["conv_blocks"]:
        raise SpecProblem("conv_blocks", "a CNN needs at least one conv block")
    t = spec["training"]
    rng("training.batch_size", t["batch_size"], 1, MAX_BATCH)
    rng("training.epochs", t["epochs"], 1, MAX_EPOCHS)
    lr = t["learning_rate"]
    if not (math.isfinite(lr) and 0.0 < lr <= 10.0):
        raise SpecProblem("training.learning_rate", f"must be in (0, 10], got {lr}")
    if not (math.isfinite(t["warmup_epochs"]) and 0.0 <= t["warmup_epochs"] <= t["epochs"]):
        raise SpecProblem("training.warmup_epochs", f"must be in [0, epochs = {t['epochs']}]")
    for field, hi in (("label_smoothing", 0.5), ("weight_decay", 1.0), ("momentum", 1.0)):
        v = t[field]
        if not (math.isfinite(v) and 0.0 <= v < hi):
            raise SpecProblem(f"training.{field}", f"must be in [0, {hi}), got {v}")
    es = t.get("early_stopping")
    if es is not None and es["patience"] < 1:
        raise SpecProblem("training.early_stopping.patience", "must be at least 1")
    for k, hi in AUG_LIMITS.items():
        v = spec["augmentation"][k]
        if not (math.isfinite(v) and 0.0 <= v <= hi):
            raise SpecProblem(f"augmentation.{k}", f"must be in [0, {hi}], got {v}")
    size, channels, params = spec["input_size"], 3, 0
    for i, b in enumerate(spec["conv_blocks"]):
        rng(f"conv_blocks[{i}].filters", b["filters"], 1, MAX_FILTERS)
        k = b["kernel_size"]
        rng(f"conv_blocks[{i}].kernel_size", k, 1, MAX_KERNEL)
        if b["padding"] == "valid":
            if k > size:
                raise SpecProblem(
                    f"conv_blocks[{i}].kernel_size",
                    f"kernel {k}x{k} does not fit the {size}x{size} input of block {i + 1}",
                )
            conv = size - k + 1
        else:
            if k % 2 == 0:
                raise SpecProblem(f"conv_blocks[{i}].kernel_size", 'padding "same" needs an odd kernel size')
            conv = size
        if conv < 2:
            raise SpecProblem(
                "conv_blocks", f"block {i + 1} leaves a {conv}x{conv} map, too small for its 2x2 max pool"
            )
        params += k * k * channels * b["filters"] + b["filters"] + (2 * b["filters"] if b["batch_norm"] else 0)
        size, channels = conv // 2, b["filters"]
    width = flat = size * size * channels
    for i, d in enumerate(spec["dense"]):
        rng(f"dense[{i}].units", d["units"], 1, MAX_UNITS)
        if not (0.0 <= d["dropout"] < 1.0):
            raise SpecProblem(f"dense[{i}].dropout", f"must be in [0, 1), got {d['dropout']}")
        params += width * d["units"] + d["units"]
        width = d["units"]
    params += width + 1
    return flat, params


# ================================================================ the search space
# key -> kind of value it takes (mlci_core::params)
MODEL_KEYS = {
    "input_size": "int",
    "conv_blocks": "int",
    "dense_layers": "int",
    "filters": "int",
    "kernel_size": "int",
    "batch_norm": "bool",
    "dense_units": "int",
    "dropout": "float",
    "training.optimizer": "optimizer",
    "training.learning_rate": "float",
    "training.weight_decay": "float",
    "training.momentum": "float",
    "training.batch_size": "int",
    "training.epochs": "int",
    "training.lr_schedule": "schedule",
    "training.warmup_epochs": "float",
    "training.label_smoothing": "float",
    "augmentation.rotation": "float",
    "augmentation.width_shift": "float",
    "augmentation.height_shift": "float",
    "augmentation.shear": "float",
    "augmentation.zoom": "float",
    "augmentation.horizontal_flip": "bool",
}


def block_key(key: str):
    """`conv_blocks[3].filters` -> (3, "filters"), else None."""
    if not key.startswith("conv_blocks[") or "]." not in key:
        return None
    index, attr = key[len("conv_blocks[") :].split("].", 1)
    if not index.isdigit() or attr not in ("filters", "kernel_size"):
        return None
    return int(index), attr


def key_kind(key: str) -> str | None:
    if key in MODEL_KEYS:
        return MODEL_KEYS[key]
    return "int" if block_key(key) else None


def value_fits_kind(kind: str, v) -> bool:
    if kind == "int":
        return _is_int(v) and v >= 0
    if kind == "float":
        return _is_num(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "optimizer":
        return isinstance(v, str) and v.lower() in OPTIMIZERS
    if kind == "schedule":
        return isinstance(v, str) and v.lower() in SCHEDULES
    return False


def parse_space(obj) -> dict:
    """search_space -> {key: {"type", ...}} in file order; BadInput naming the key."""
    if not isinstance(obj, dict) or not obj:
        raise BadInput("search_space: must be a non-empty mapping of key -> {type: ...}")
    space = {}
    for key, p in obj.items():
        where = f"search_space.{key}"
        kind = key_kind(key)
        if kind is None:
            raise BadInput(
                f"{where}: unsupported key (supported: {', '.join(MODEL_KEYS)}, "
                "conv_blocks[i].filters, conv_blocks[i].kernel_size)"
            )
        if not isinstance(p, dict) or "type" not in p:
            raise BadInput(f"{where}: must be a mapping with a type (int, float or categorical)")
        if "when" in p:
            raise BadInput(f"{where}.when: conditional parameters are not supported by this benchmark")
        t = p["type"]
        if t == "int":
            _fields(p, where, {"type": "str", "min": "int", "max": "int", "step": "int", "log": "bool"})
            if "min" not in p or "max" not in p:
                raise BadInput(f"{where}: an int needs min and max")
            step, lg = p.get("step"), bool(p.get("log", False))
            if p["min"] > p["max"]:
                raise BadInput(f"{where}: min {p['min']} > max {p['max']}")
            if step is not None and step < 1:
                raise BadInput(f"{where}.step: must be at least 1")
            if lg and step not in (None, 1):
                raise BadInput(f"{where}: Optuna cannot combine log with step {step}")
            if lg and p["min"] < 1:
                raise BadInput(f"{where}: a log range needs min >= 1")
            if kind not in ("int", "float"):
                raise BadInput(f"{where}: {key} takes a {kind} value, not an int range")
            space[key] = {"type": "int", "min": p["min"], "max": p["max"], "step": step, "log": lg}
        elif t == "float":
            _fields(p, where, {"type": "str", "min": "num", "max": "num", "log": "bool"})
            if "min" not in p or "max" not in p:
                raise BadInput(f"{where}: a float needs min and max")
            lo, hi, lg = float(p["min"]), float(p["max"]), bool(p.get("log", False))
            if lo > hi:
                raise BadInput(f"{where}: min {lo} > max {hi}")
            if lg and lo <= 0:
                raise BadInput(f"{where}: a log range needs min > 0")
            if kind != "float":
                raise BadInput(f"{where}: {key} takes a {kind} value, not a float range")
            space[key] = {"type": "float", "min": lo, "max": hi, "log": lg}
        elif t == "categorical":
            _fields(p, where, {"type": "str", "values": "any"})
            values = p.get("values")
            if not isinstance(values, list) or not values:
                raise BadInput(f"{where}.values: must be a non-empty list")
            for v in values:
                if not isinstance(v, (bool, int, float, str)):
                    raise BadInput(f"{where}.values: unsupported value {v!r}")
                if not value_fits_kind(kind, v):
                    raise BadInput(f"{where}.values: {v!r} is not a valid {kind} for {key}")
            space[key] = {"type": "categorical", "values": list(values)}
        else:
            raise BadInput(f"{where}.type: unknown {t!r} (expected int, float or categorical)")
    return space


def apply_params(base: dict, params: dict) -> dict:
    """mlci_core::apply_params: the base model with a trial's values, in mlci's order."""
    spec = copy.deepcopy(base)
    get = params.get
    if "input_size" in params:
        spec["input_size"] = get("input_size")
    if "conv_blocks" in params:
        n = get("conv_blocks")
        if n < 1:
            raise SpecProblem("search_space.conv_blocks", "needs at least one block")
        del spec["conv_blocks"][n:]
        while len(spec["conv_blocks"]) < n:
            last = dict(spec["conv_blocks"][-1]) if spec["conv_blocks"] else {
                "filters": 16, "kernel_size": 3, "padding": "valid", "batch_norm": False,
            }
            last["filters"] *= 2
            spec["conv_blocks"].append(last)
    if "dense_layers" in params:
        n = get("dense_layers")
        del spec["dense"][n:]
        while len(spec["dense"]) < n:
            last = dict(spec["dense"][-1]) if spec["dense"] else {"units": 128, "dropout": 0.0}
            spec["dense"].append(last)
    if "filters" in params:
        for i, b in enumerate(spec["conv_blocks"]):
            b["filters"] = get("filters") << min(i, 16)
    if "kernel_size" in params:
        for b in spec["conv_blocks"]:
            b["kernel_size"] = get("kernel_size")
    if "batch_norm" in params:
        for b in spec["conv_blocks"]:
            b["batch_norm"] = bool(get("batch_norm"))
    for key in sorted(params):  # mlci's Params is a BTreeMap: sorted keys
        bk = block_key(key)
        if bk:
            i, attr = bk
            if i >= len(spec["conv_blocks"]):
                raise SpecProblem(f"search_space.{key}", f"the model has {len(spec['conv_blocks'])} conv blocks")
            spec["conv_blocks"][i][attr] = params[key]
    if "dense_units" in params:
        for d in spec["dense"]:
            d["units"] = get("dense_units")
    if "dropout" in params:
        for d in spec["dense"]:
            d["dropout"] = float(get("dropout"))
    t = spec["training"]
    for name in ("optimizer", "lr_schedule"):
        if f"training.{name}" in params:
            t[name] = str(get(f"training.{name}")).lower()
    for name in ("learning_rate", "weight_decay", "momentum", "warmup_epochs", "label_smoothing"):
        if f"training.{name}" in params:
            t[name] = float(get(f"training.{name}"))
    for name in ("batch_size", "epochs"):
        if f"training.{name}" in params:
            t[name] = get(f"training.{name}")
    a = spec["augmentation"]
    for name in AUG_FLOATS:
        if f"augmentation.{name}" in params:
            a[name] = float(get(f"augmentation.{name}"))
    if "augmentation.horizontal_flip" in params:
        a["horizontal_flip"] = bool(get("augmentation.horizontal_flip"))
    return spec


def base_value(base: dict, key: str):
    """The value `key` has in the base model (mlci_core::base_params), None if none."""
    bk = block_key(key)
    if bk:
        i, attr = bk
        return base["conv_blocks"][i][attr] if i < len(base["conv_blocks"]) else None
    blocks, dense, t, a = base["conv_blocks"], base["dense"], base["training"], base["augmentation"]
    if key == "input_size":
        return base["input_size"]
    if key == "conv_blocks":
        return len(blocks)
    if key == "dense_layers":
        return len(dense)
    if key in ("filters", "kernel_size", "batch_norm"):
        return blocks[0][key] if blocks else None
    if key == "dense_units":
        return dense[0]["units"] if dense else None
    if key == "dropout":
        return dense[0]["dropout"] if dense else None
    if key.startswith("training."):
        return t.get(key.split(".", 1)[1])
    if key.startswith("augmentation."):
        return a.get(key.split(".", 1)[1])
    return None


def in_domain(p: dict, v) -> bool:
    """mlci's ParamSpec::contains (types compared as mlci's ParamValue does)."""
    if v is None:
        return False
    if p["type"] == "int":
        return _is_int(v) and p["min"] <= v <= p["max"] and (v - p["min"]) % (p["step"] or 1) == 0
    if p["type"] == "float":
        return _is_num(v) and p["min"] <= v <= p["max"]
    return any(type(v) is type(c) and v == c for c in p["values"])


def base_params(base: dict, space: dict) -> tuple[dict | None, str]:
    """(the base model as a point of the space, "") or (None, why not)."""
    point = {}
    for key, p in space.items():
        v = base_value(base, key)
        if not in_domain(p, v):
            return None, f"the base model's {key} = {v!r} is not in search_space.{key}"
        point[key] = v
    try:
        check_model(apply_params(base, point))
    except SpecProblem as e:
        return None, f"the base model as a point of the space is no valid model: {e}"
    return point, ""


# ================================================================ the experiment
def _num(v, where, lo=None, hi=None, integer=False):
    if not (_is_int(v) if integer else _is_num(v)):
        raise BadInput(f"{where}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadInput(f"{where}: must be in [{lo}, {hi}], got {v}")
    return v


def load_experiment(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML: {e}")
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: expected a mapping at the top")
    exp = {}
    obj = doc.get("objective") or {}
    if not isinstance(obj, dict):
        raise BadInput("objective: must be a mapping")
    _fields(obj, "objective", {"metric": "str", "direction": "str", "goal": "any", "prefer": "str", "confidence": "any"})
    if obj.get("metric", "val_accuracy") != "val_accuracy":
        raise BadInput(f"objective.metric: only val_accuracy is supported, got {obj['metric']!r}")
    if obj.get("direction", "maximize") != "maximize":
        raise BadInput(f"objective.direction: only maximize is supported, got {obj['direction']!r}")
    goal = obj.get("goal", 0.80)  # mlci's default goal of the default objective
    if goal is not None:
        goal = float(_num(goal, "objective.goal"))
    exp["goal"] = goal
    conf = obj.get("confidence")
    if conf is not None:
        conf = float(_num(conf, "objective.confidence", 0.0, 1.0))
        if not 0.0 < conf < 1.0:
            raise BadInput("objective.confidence: must be in (0, 1)")
    exp["confidence"] = conf
    exp["space"] = parse_space(doc.get("search_space"))

    alg = doc.get("algorithm") or {}
    if not isinstance(alg, dict):
        raise BadInput("algorithm: must be a mapping")
    name = alg.get("name", "tpe")
    if name not in ("tpe", "random"):
        raise BadInput(f"algorithm.name: {name!r} has no Optuna peer here (tpe or random)")
    exp["algorithm"] = name
    exp["n_startup_trials"] = _num(alg.get("n_startup_trials", 10), "algorithm.n_startup_trials", 0, integer=True)
    exp["n_ei_candidates"] = _num(alg.get("n_ei_candidates", 24), "algorithm.n_ei_candidates", 1, integer=True)
    exp["base_first"] = alg.get("base_first", True) is not False

    es = doc.get("early_stopping")
    if es is None:
        exp["pruner"] = None
    else:
        if not isinstance(es, dict) or "rule" not in es:
            raise BadInput("early_stopping: must be a mapping with a rule (median or asha)")
        if es["rule"] == "median":
            _fields(es, "early_stopping", {"rule": "str", "warmup_epochs": "int", "min_trials": "int"})
            exp["pruner"] = {
                "rule": "median",
                "warmup_epochs": _num(es.get("warmup_epochs", 1), "early_stopping.warmup_epochs", 0, integer=True),
                "min_trials": _num(es.get("min_trials", 3), "early_stopping.min_trials", 0, integer=True),
            }
        elif es["rule"] == "asha":
            _fields(es, "early_stopping", {"rule": "str", "min_epochs": "int", "reduction_factor": "int"})
            exp["pruner"] = {
                "rule": "asha",
                "min_epochs": _num(es.get("min_epochs", 1), "early_stopping.min_epochs", 1, integer=True),
                "reduction_factor": _num(
                    es.get("reduction_factor", 3), "early_stopping.reduction_factor", 2, integer=True
                ),
            }
        else:
            raise BadInput(f"early_stopping.rule: unknown {es['rule']!r} (expected median or asha)")

    budget = doc.get("budget") or {}
    if not isinstance(budget, dict):
        raise BadInput("budget: must be a mapping")
    exp["max_trials"] = _num(budget.get("max_trials", 20), "budget.max_trials", 1, integer=True)
    exp["parallel_trials"] = _num(budget.get("parallel_trials", 1), "budget.parallel_trials", 1, integer=True)
    exp["max_failed_trials"] = _num(budget.get("max_failed_trials", 3), "budget.max_failed_trials", 0, integer=True)
    wall = budget.get("max_wall_seconds")
    exp["max_wall_seconds"] = None if wall is None else float(_num(wall, "budget.max_wall_seconds", 0))

    trial = doc.get("trial") or {}
    if not isinstance(trial, dict):
        raise BadInput("trial: must be a mapping")
    exp["base"] = parse_model(trial.get("model"))
    try:
        check_model(exp["base"])
    except SpecProblem as e:
        raise BadInput(f"trial.model.{e}")

    ds = doc.get("dataset") or {}
    if not isinstance(ds, dict):
        raise BadInput("dataset: must be a mapping")
    if ds.get("val_split") is not None:
        raise BadInput("dataset.val_split: not supported here (the data set needs train/ and validation/)")
    ts = ds.get("test_split")
    if ts is not None:
        ts = float(_num(ts, "dataset.test_split"))
        if not 0.0 < ts < 1.0:
            raise BadInput(f"dataset.test_split: must be in (0, 1), got {ts}")
    exp["test_split"] = ts
    exp["dataset_path"] = ds.get("path")
    return exp


# ================================================================ data
def image_files(folder: str, limit: int | None) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise BadInput(f"{folder}: {e.strerror}")
    files = [
        os.path.join(folder, n)
        for n in names
        if not n.startswith(".")
        and n.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, n))
    ]
    return files[:limit] if limit is not None else files


def class_folders(folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise BadInput(f"{folder}: {e.strerror}")
    return [n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]


def n_test_of(n: int, fraction: float) -> int:
    """clamp(round(n * f), 1, n - 2) with Rust's f64::round (half away from zero)."""
    return min(max(int(math.floor(n * fraction + 0.5)), 1), n - 2)


def carve_test(files: list[str], fraction: float, where: str) -> tuple[list[str], list[str]]:
    """mlci's carve: (training files, test files) of one class."""
    if len(files) < 3:
        raise BadInput(f"{where}: {len(files)} image(s), too few to carve a test split from")
    keyed = sorted((hashlib.sha256(os.fsencode(os.path.basename(p))).digest(), p) for p in files)
    n_test = n_test_of(len(keyed), fraction)
    test = [p for _, p in keyed[:n_test]]
    train = sorted(p for _, p in keyed[n_test:])
    return train, test


def list_dataset(data: str, test_split: float | None, limit: int | None):
    """(classes, train, validation, test): lists of (path, label)."""
    train_dir, val_dir, test_dir = (os.path.join(data, s) for s in ("train", "validation", "test"))
    if not (os.path.isdir(train_dir) and os.path.isdir(val_dir)):
        raise BadInput(f"{data}: needs train/ and validation/ folders of class folders")
    classes = class_folders(train_dir)
    if len(classes) != 2:
        raise BadInput(f"{train_dir}: expected 2 class folders (a binary task), found {classes}")
    if class_folders(val_dir) != classes:
        raise BadInput(f"{val_dir}: class folders {class_folders(val_dir)} differ from train/'s {classes}")
    test_folder = os.path.isdir(test_dir)
    if test_folder and test_split is not None:
        raise BadInput(f"{test_dir}: a test/ folder and dataset.test_split both give a test split")
    if test_folder and class_folders(test_dir) != classes:
        raise BadInput(f"{test_dir}: class folders differ from train/'s {classes}")
    train, val, test = [], [], []
    for label, cls in enumerate(classes):
        files = image_files(os.path.join(train_dir, cls), limit)
        if test_split is not None:
            files, held = carve_test(files, test_split, os.path.join(train_dir, cls))
        elif test_folder:
            held = image_files(os.path.join(test_dir, cls), limit)
        else:
            held = []
        train += [(p, label) for p in files]
        test += [(p, label) for p in held]
        val += [(p, label) for p in image_files(os.path.join(val_dir, cls), limit)]
    for split, items in (("train", train), ("validation", val)):
        for label, cls in enumerate(classes):
            if not any(lab == label for _, lab in items):
                raise BadInput(f"{os.path.join(data, split, cls)}: no images")
    return classes, train, val, test


def decode(items, size: int, threads: int):
    """(uint8 torch tensor [n, size, size, 3] NHWC, bool labels [n]) of the readable
    images, decoded and resized on `threads` threads (PIL releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    from PIL import Image

    def one(path):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except Exception as e:  # mlci skips unreadable images with a warning
            log(f"skipping unreadable image {path}: {e}")
            return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pixels = list(pool.map(one, [p for p, _ in items], chunksize=16))
    keep = [i for i, px in enumerate(pixels) if px is not None]
    x = np.stack([pixels[i] for i in keep]) if keep else np.empty((0, size, size, 3), np.uint8)
    y = np.array([items[i][1] == 1 for i in keep], dtype=bool)
    return torch.from_numpy(x), torch.from_numpy(y)


# ================================================================ augmentation
def aug_identity(aug: dict) -> bool:
    return all(aug[k] == 0 for k in AUG_FLOATS) and not aug["horizontal_flip"]


def draw_aug_params(n: int, size: int, aug: dict, gen):
    """Per image (Keras ImageDataGenerator ranges): float64 tensors theta, tx, ty,
    shear (radians / pixels), zx, zy and flip (bool)."""
    import torch

    u = torch.rand(n, 7, generator=gen, dtype=torch.float64)

    def sym(col, rng):
        return (2.0 * u[:, col] - 1.0) * rng

    theta = torch.deg2rad(sym(0, aug["rotation"]))
    tx = sym(1, aug["width_shift"]) * size
    ty = sym(2, aug["height_shift"]) * size
    shear = torch.deg2rad(sym(3, aug["shear"]))
    zx = 1.0 + sym(4, aug["zoom"])
    zy = 1.0 + sym(5, aug["zoom"])
    flip = (u[:, 6] < 0.5) if aug["horizontal_flip"] else torch.zeros(n, dtype=torch.bool)
    return theta, tx, ty, shear, zx, zy, flip


def aug_coefficients(theta, shear, zx, zy):
    """mlci's map: source = [[a, b], [c, d]] @ (out - centre) + centre - t."""
    import torch

    cos, sin = torch.cos(theta), torch.sin(theta)
    scos, ssin = torch.cos(shear), torch.sin(shear)
    a = cos * zx
    b = -(cos * ssin + sin * scos) * zy
    c = sin * zx
    d = (cos * scos - sin * ssin) * zy
    return a, b, c, d


def augment_batch(x, params):
    """Augment a float batch x [n, 3, s, s] (values in [0, 1]) with one affine map per
    image: affine_grid + grid_sample (bilinear, border = nearest fill, align_corners so
    normalised -1..1 is pixel 0..s-1). Returns a channels_last batch."""
    import torch
    import torch.nn.functional as F

    n, _, s, _ = x.shape
    theta, tx, ty, shear, zx, zy, flip = params
    a, b, c, d = aug_coefficients(theta, shear, zx, zy)
    f = torch.where(flip, -1.0, 1.0).to(torch.float64)
    centre = (s - 1) / 2.0
    # Output pixel ox maps to u = (ox - centre) / centre; the flipped x is -u.
    # Source pixel sx = a*x + b*y + centre - tx  ->  normalised (sx - centre) / centre.
    mat = torch.stack(
        [
            torch.stack([a * f, b, -tx / centre], dim=1),
            torch.stack([c * f, d, -ty / centre], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(mat, [n, x.shape[1], s, s], align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.contiguous(memory_format=torch.channels_last)


def augment_reference(img, size, theta, tx, ty, shear, zx, zy, flip):
    """mlci's augment(), per pixel, in numpy float64: img uint8 [s, s, 3] -> [s, s, 3]."""
    import numpy as np

    cos, sin = math.cos(theta), math.sin(theta)
    scos, ssin = math.cos(shear), math.sin(shear)
    a, b = cos * zx, -(cos * ssin + sin * scos) * zy
    c, d = sin * zx, (cos * scos - sin * ssin) * zy
    centre = (size - 1) / 2.0
    mx = size - 1
    out = np.zeros((size, size, 3))
    src = img.astype(np.float64)
    for oy in range(size):
        for ox in range(size):
            x = ((size - 1 - ox) if flip else ox) - centre
            y = oy - centre
            sx = min(max(a * x + b * y + centre - tx, 0.0), mx)
            sy = min(max(c * x + d * y + centre - ty, 0.0), mx)
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            x1, y1 = min(x0 + 1, size - 1), min(y0 + 1, size - 1)
            fx, fy = sx - x0, sy - y0
            top = src[y0, x0] * (1 - fx) + src[y0, x1] * fx
            bottom = src[y1, x0] * (1 - fx) + src[y1, x1] * fx
            out[oy, ox] = (top * (1 - fy) + bottom * fy) / 255.0
    return out


# ================================================================ network and training
def build_model(spec: dict, gen):
    """The CNN of `spec` (NCHW in channels_last memory), Glorot-uniform weights drawn
    from `gen`, zero biases, batch norm gamma 1 and beta 0."""
    import torch
    from torch import nn

    def glorot(w, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            w.uniform_(-limit, limit, generator=gen)

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            layers, ch, size = [], 3, spec["input_size"]
            for blk in spec["conv_blocks"]:
                k, f = blk["kernel_size"], blk["filters"]
                conv = nn.Conv2d(ch, f, k, stride=1, padding=(k // 2 if blk["padding"] == "same" else 0), bias=True)
                glorot(conv.weight, k * k * ch, k * k * f)
                nn.init.zeros_(conv.bias)
                layers.append(conv)
                if blk["batch_norm"]:
                    layers.append(nn.BatchNorm2d(f, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH))
                layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
                size = (size if blk["padding"] == "same" else size - k + 1) // 2
                ch = f
            self.features = nn.Sequential(*layers)
            head, width = [], size * size * ch
            for dl in spec["dense"]:
                lin = nn.Linear(width, dl["units"])
                glorot(lin.weight, width, dl["units"])
                nn.init.zeros_(lin.bias)
                head += [lin, nn.ReLU(inplace=True)]
                if dl["dropout"] > 0:
                    head.append(nn.Dropout(dl["dropout"]))
                width = dl["units"]
            out = nn.Linear(width, 1)
            glorot(out.weight, width, 1)
            nn.init.zeros_(out.bias)
            head.append(out)
            self.head = nn.Sequential(*head)

        def forward(self, x):
            x = self.features(x)
            # channels_last: NHWC in memory, so this flatten is a view (mlci's NHWC order)
            return self.head(x.permute(0, 2, 3, 1).flatten(1)).squeeze(1)

    return Cnn().to(memory_format=torch.channels_last)


def make_optimizer(spec: dict, params):
    import torch

    t = spec["training"]
    lr, wd, kind = t["learning_rate"], t["weight_decay"], t["optimizer"]
    # foreach: one multi-tensor kernel per update instead of one per parameter (torch's
    # default on CPU is the per-parameter loop); same arithmetic.
    if kind == "adam":  # weight_decay: L2 added to the gradient, as mlci
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=OPT_EPS, weight_decay=wd, foreach=True)
    if kind == "adamw":  # decoupled
        return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=OPT_EPS, weight_decay=wd, foreach=True)
    if kind == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, alpha=RMSPROP_RHO, eps=OPT_EPS, weight_decay=wd, momentum=0.0, foreach=True
        )
    return torch.optim.SGD(params, lr=lr, momentum=t["momentum"], weight_decay=wd, foreach=True)


def lr_factor(training: dict, step: int, steps_per_epoch: int) -> float:
    """mlci's TrainingConfig::lr_factor for update `step` (0-based)."""
    per_epoch = float(max(steps_per_epoch, 1))
    warmup = training["warmup_epochs"] * per_epoch
    if step < warmup:
        return (step + 1.0) / warmup
    if training["lr_schedule"] == "constant":
        return 1.0
    span = max(training["epochs"] * per_epoch - warmup, 1.0)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def to_unit(xb):
    """uint8 NHWC batch -> float [0, 1] NCHW batch in channels_last memory."""
    return xb.permute(0, 3, 1, 2).float().div_(255.0)


def evaluate(model, x, y, want_loss=False):
    """(correct, total, mean loss or None) on (x, y) in batches of EVAL_BATCH."""
    import torch
    import torch.nn.functional as F

    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for s in range(0, len(x), EVAL_BATCH):
            logits = model(to_unit(x[s : s + EVAL_BATCH]))
            yb = y[s : s + EVAL_BATCH]
            correct += ((logits > 0) == yb).sum()
            if want_loss:
                loss_sum += F.binary_cross_entropy_with_logits(logits, yb.float(), reduction="sum").double()
    n = len(x)
    return int(correct), n, (float(loss_sum) / max(n, 1) if want_loss else None)


def wilson(correct: int, total: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """mlci's Accuracy::wilson."""
    if total == 0:
        return 0.0, 1.0
    n, p = float(total), correct / total
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ================================================================ run
def suggest(trial, key: str, p: dict):
    if p["type"] == "int":
        return trial.suggest_int(key, p["min"], p["max"], step=p["step"] or 1, log=p["log"])
    if p["type"] == "float":
        return trial.suggest_float(key, p["min"], p["max"], log=p["log"])
    return trial.suggest_categorical(key, p["values"])


def cmd_run(args) -> int:
    import torch

    torch.set_num_interop_threads(1)
    import optuna

    t0 = time.perf_counter()  # the benchmark's clock
    imports_s = t0 - _PROCESS_T0

    def elapsed() -> float:
        return time.perf_counter() - t0

    exp = load_experiment(args.spec)
    if args.max_wall_seconds is not None:
        exp["max_wall_seconds"] = args.max_wall_seconds
    data_dir = args.data
    if data_dir is None:
        if not exp["dataset_path"]:
            raise BadInput("no --data and no dataset.path in the spec")
        data_dir = exp["dataset_path"]
    if not os.path.isdir(data_dir):
        raise BadInput(f"{data_dir}: no such folder (the data set)")
    parallel = exp["parallel_trials"]
    torch_threads = args.threads if parallel == 1 else max(1, args.threads // parallel)
    torch.set_num_threads(torch_threads)
    goal, confidence = exp["goal"], exp["confidence"]
    wall = exp["max_wall_seconds"]
    z_goal = None
    if confidence is not None:
        from statistics import NormalDist

        z_goal = NormalDist().inv_cdf(0.5 + confidence / 2.0)

    def meets_goal(correct: int, total: int) -> bool:
        if goal is None or total == 0:
            return False
        if z_goal is None:
            return correct / total >= goal
        return wilson(correct, total, z_goal)[0] >= goal

    classes, train_items, val_items, test_items = list_dataset(data_dir, exp["test_split"], args.limit)
    log(
        f"{SIDE}: torch {torch.__version__}, optuna {optuna.__version__}; data {data_dir}"
        f"{f' (first {args.limit} per class per folder)' if args.limit else ''}: classes {classes}, "
        f"{len(train_items)} training, {len(val_items)} validation, {len(test_items)} test images; "
        f"{args.threads} thread(s), torch {torch_threads} per trial x {parallel} parallel"
    )

    lock = threading.Lock()
    caches: dict[int, tuple] = {}
    cache_locks: dict[int, threading.Lock] = {}
    st = {
        "decode_s": 0.0,
        "started": 0,
        "completed": 0,
        "pruned": 0,
        "failed": 0,
        "stopped": 0,
        "epochs": 0,
        "goal_met": False,
        "seconds_to_goal": None,
        "winner": None,  # {"number", "epoch", "val_accuracy", "params", "spec", "state"}
        "best": None,  # the best epoch seen in any trial, same shape
        "stop_reason": None,
        "trial_rss": {},
        "details": {},
    }
    goal_event = threading.Event()

    def data_for(size: int):
        with lock:
            size_lock = cache_locks.setdefault(size, threading.Lock())
        with size_lock:
            if size not in caches:
                t = time.perf_counter()
                tx, ty = decode(train_items, size, args.threads)
                vx, vy = decode(val_items, size, args.threads)
                dt = time.perf_counter() - t
                with lock:
                    st["decode_s"] += dt
                log(f"decoded {len(tx)} training and {len(vx)} validation images at {size}x{size} in {dt:.1f} s")
                for split, ys in (("train", ty), ("validation", vy)):
                    positives = int(ys.sum())
                    if positives == 0 or positives == len(ys):
                        raise BadInput(f"{os.path.join(data_dir, split)}: a class has no readable image")
                caches[size] = (tx, ty, vx, vy)
            return caches[size]

    def wall_spent() -> bool:
        return wall is not None and elapsed() >= wall

    def failed(trial, detail, why):
        """Count a failed trial; past budget.max_failed_trials (and no goal), stop."""
        detail["state"] = "failed"
        with lock:
            st["failed"] += 1
            too_many = st["failed"] > exp["max_failed_trials"] and not st["goal_met"]
        log(f"trial {trial.number} failed: {why}")
        if too_many:
            st["stop_reason"] = f"more than budget.max_failed_trials ({exp['max_failed_trials']}) failed"
            trial.study.stop()

    def objective(trial):
        number = trial.number
        started = time.perf_counter()
        with lock:
            st["started"] += 1
        detail = {"number": number, "state": "running", "epochs": 0, "best_val_accuracy": None}
        st["details"][number] = detail
        try:
            params = {key: suggest(trial, key, p) for key, p in exp["space"].items()}
            detail["params"] = params
            try:
                spec = apply_params(exp["base"], params)
                if args.max_epochs is not None and spec["training"]["epochs"] > args.max_epochs:
                    spec["training"]["epochs"] = args.max_epochs
                    t = spec["training"]
                    t["warmup_epochs"] = min(t["warmup_epochs"], float(args.max_epochs))
                check_model(spec)
            except SpecProblem as e:
                failed(trial, detail, f"infeasible: {e} (params {params})")
                raise Infeasible(str(e)) from None
            try:
                return train_trial(trial, number, params, spec, detail)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory: a failed trial, as in mlci
                failed(trial, detail, f"{type(e).__name__}: {e}")
                raise Crashed(str(e)) from None
        finally:
            detail["seconds"] = round(time.perf_counter() - started, 3)
            st["trial_rss"][number] = rss_mb()

    def train_trial(trial, number, params, spec, detail):
        import torch.nn.functional as F

        tx, ty, vx, vy = data_for(spec["input_size"])
        tr, aug = spec["training"], spec["augmentation"]
        seed = args.seed * 1000 + number
        if parallel == 1:
            torch.manual_seed(seed)  # dropout draws from torch's global generator
        init_gen = torch.Generator().manual_seed(seed)
        shuffle_gen = torch.Generator().manual_seed(seed + 0x5EED)
        aug_gen = torch.Generator().manual_seed(seed + 0xA06)
        model = build_model(spec, init_gen)
        opt = make_optimizer(spec, model.parameters())
        n = len(tx)
        bs = tr["batch_size"]
        steps_per_epoch = (n + bs - 1) // bs
        smooth = tr["label_smoothing"]
        targets = ty.float() * (1.0 - smooth) + 0.5 * smooth
        scheduled = tr["lr_schedule"] != "constant" or tr["warmup_epochs"] > 0
        augmenting = not aug_identity(aug)
        es = tr["early_stopping"]
        step = 0
        best_acc, best_epoch, best_monitor, stale = None, 0, None, 0
        for epoch in range(1, tr["epochs"] + 1):
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64)
            for idx in torch.randperm(n, generator=shuffle_gen).split(bs):
                xb = to_unit(tx[idx])
                if augmenting:
                    xb = augment_batch(xb, draw_aug_params(len(idx), spec["input_size"], aug, aug_gen))
                if scheduled:
                    lr = tr["learning_rate"] * lr_factor(tr, step, steps_per_epoch)
                    for g in opt.param_groups:
                        g["lr"] = lr
                loss = F.binary_cross_entropy_with_logits(model(xb), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += loss.detach()
            if not math.isfinite(float(loss_sum)):
                with lock:
                    st["epochs"] += 1
                failed(trial, detail, f"the loss diverged in epoch {epoch}")
                raise Diverged(f"trial {number}: loss not finite in epoch {epoch}")
            want_loss = es is not None and es["monitor"] == "val_loss"
            correct, total, val_loss = evaluate(model, vx, vy, want_loss)
            acc = correct / total
            detail["epochs"] = epoch
            log(f"trial {number} epoch {epoch} val_accuracy {acc:.4f} ({elapsed():.1f} s)")
            improved = best_acc is None or acc > best_acc
            if improved:
                best_acc, best_epoch = acc, epoch
                detail["best_val_accuracy"] = acc
            reached = False
            with lock:
                st["epochs"] += 1
                if meets_goal(correct, total) and not st["goal_met"]:
                    reached = True
                    st["goal_met"] = True
                    st["seconds_to_goal"] = elapsed()
                if reached or (improved and (st["best"] is None or acc > st["best"]["val_accuracy"])):
                    rec = {
                        "number": number,
                        "epoch": epoch,
                        "val_accuracy": acc,
                        "params": params,
                        "spec": copy.deepcopy(spec),
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
                    if reached:
                        st["winner"] = rec
                    if st["best"] is None or acc > st["best"]["val_accuracy"]:
                        st["best"] = rec
            trial.report(acc, epoch)
            if reached:
                log(f"trial {number} met the goal {goal} at epoch {epoch}: val_accuracy {acc:.4f} "
                    f"({st['seconds_to_goal']:.1f} s)")
                goal_event.set()
                trial.study.stop()
                detail["state"] = "completed (goal)"
                with lock:
                    st["completed"] += 1
                return best_acc
            if epoch < tr["epochs"] and (goal_event.is_set() or wall_spent()):
                why = "another trial met the goal" if goal_event.is_set() else "the wall budget is spent"
                log(f"trial {number} stopped after epoch {epoch}: {why}")
                if not goal_event.is_set():
                    st["stop_reason"] = st["stop_reason"] or "budget.max_wall_seconds spent"
                    trial.study.stop()
                detail["state"] = "stopped"
                with lock:
                    st["stopped"] += 1
                return best_acc
            if es is not None:
                mon = acc if es["monitor"] == "val_accuracy" else val_loss
                better = best_monitor is None or (
                    mon > best_monitor + es["min_delta"]
                    if es["monitor"] == "val_accuracy"
                    else mon < best_monitor - es["min_delta"]
                )
                if better:
                    best_monitor, stale = mon, 0
                else:
                    stale += 1
                if stale >= es["patience"]:
                    log(f"trial {number} early-stopped after epoch {epoch} (patience {es['patience']})")
                    break
            if trial.should_prune():
                log(f"trial {number} pruned after epoch {epoch} (best val_accuracy {best_acc:.4f})")
                detail["state"] = "pruned"
                with lock:
                    st["pruned"] += 1
                raise optuna.TrialPruned()
        detail["state"] = "completed"
        with lock:
            st["completed"] += 1
        log(f"trial {number} completed: best val_accuracy {best_acc:.4f} at epoch {best_epoch}")
        return best_acc

    # Decode before the first trial, at the base model's size (unless the space has
    # input_size and the base's is not in it: then at a trial's size on first use).
    base_size = exp["base"]["input_size"]
    if "input_size" not in exp["space"] or in_domain(exp["space"]["input_size"], base_size):
        data_for(base_size)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if exp["algorithm"] == "tpe":
        sampler = optuna.samplers.TPESampler(
            seed=args.seed, n_startup_trials=exp["n_startup_trials"], n_ei_candidates=exp["n_ei_candidates"]
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=args.seed)
    pr = exp["pruner"]
    if pr is None:
        pruner = optuna.pruners.NopPruner()
    elif pr["rule"] == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=pr["min_trials"], n_warmup_steps=pr["warmup_epochs"] + 1
        )
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pr["min_epochs"], reduction_factor=pr["reduction_factor"]
        )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if args.no_enqueue_base or not exp["base_first"]:
        log("base model not enqueued (--no-enqueue-base or algorithm.base_first: false)")
    else:
        point, why = base_params(exp["base"], exp["space"])
        if point is None:
            log(f"base model not enqueued: {why}")
        else:
            study.enqueue_trial(point)
            log(f"trial 0 is the base model: {point}")
    timeout = None
    if wall is not None:
        timeout = wall - elapsed()
    if timeout is None or timeout > 0:
        study.optimize(
            objective,
            n_trials=exp["max_trials"],
            n_jobs=parallel,
            timeout=timeout,
            catch=(Infeasible, Diverged, Crashed),
        )
    else:
        st["stop_reason"] = "budget.max_wall_seconds spent while decoding"
    if st["stop_reason"] is None and not st["goal_met"]:
        st["stop_reason"] = (
            "budget.max_wall_seconds spent" if wall_spent() else f"budget.max_trials ({exp['max_trials']}) run"
        )
    search_s = elapsed()

    chosen = st["winner"] if st["goal_met"] else st["best"]
    test = {"test_accuracy": None, "test_correct": None, "test_images": None, "test_interval": None}
    test_s = None
    if chosen is not None and test_items:
        t = time.perf_counter()
        sx, sy = decode(test_items, chosen["spec"]["input_size"], args.threads)
        model = build_model(chosen["spec"], torch.Generator().manual_seed(0))
        model.load_state_dict(chosen["state"])
        correct, total, _ = evaluate(model, sx, sy)
        test_s = time.perf_counter() - t
        lo, hi = wilson(correct, total)
        test = {
            "test_accuracy": correct / total if total else None,
            "test_correct": correct,
            "test_images": total,
            "test_interval": [lo, hi],
        }
        log(
            f"chosen model: trial {chosen['number']} epoch {chosen['epoch']} (val_accuracy "
            f"{chosen['val_accuracy']:.4f}); test accuracy {correct}/{total} = "
            f"{test['test_accuracy']:.4f}, 95% [{lo:.4f}, {hi:.4f}] ({test_s:.1f} s)"
        )
    total_s = elapsed()
    winner = None
    if chosen is not None:
        _, param_count = check_model(chosen["spec"])
        winner = {
            "number": chosen["number"],
            "epoch": chosen["epoch"],
            "val_accuracy": chosen["val_accuracy"],
            "params": chosen["params"],
            "param_count": param_count,
        }
    out = {
        "side": SIDE,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "seed": args.seed,
        "threads": args.threads,
        "torch_threads": torch_threads,
        "parallel_trials": parallel,
        "limit": args.limit,
        "max_epochs": args.max_epochs,
        "max_wall_seconds": wall,
        "goal": goal,
        "goal_met": st["goal_met"],
        "seconds_to_goal": st["seconds_to_goal"],
        "seconds_total": total_s,
        "seconds_search": search_s,
        "seconds_decoding": st["decode_s"],
        "seconds_test": test_s,
        "seconds_imports": imports_s,
        "stop_reason": "goal met" if st["goal_met"] else st["stop_reason"],
        "train_images": len(train_items),
        "validation_images": len(val_items),
        "trials": st["started"],
        "trials_completed": st["completed"],
        "trials_pruned": st["pruned"],
        "trials_failed": st["failed"],
        "trials_stopped": st["stopped"],
        "epochs_trained": st["epochs"],
        "winner": winner,
        **test,
        "peak_rss_mb": rss_mb(),
        "trial_peak_rss_mb": [st["trial_rss"][k] for k in sorted(st["trial_rss"])],
        "trial_details": [st["details"][k] for k in sorted(st["details"])],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    log(
        f"{'goal met' if st['goal_met'] else 'goal not met'}"
        + (f" in {st['seconds_to_goal']:.1f} s" if st["goal_met"] else "")
        + f"; {st['started']} trial(s), {st['epochs']} epoch(s), {total_s:.1f} s in all; wrote {args.out}"
    )
    return 0


# ================================================================ self-test
def cmd_selftest(args) -> int:
    import numpy as np
    import torch

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    failures = []

    def check(name, ok, detail=""):
        log(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if not ok:
            failures.append(name)

    # 1. batched augmentation == mlci's per-pixel map
    rng = np.random.default_rng(7)
    worst = 0.0
    cases = [
        (9, {"rotation": 30, "width_shift": 0.2, "height_shift": 0.2, "shear": 20, "zoom": 0.3, "horizontal_flip": True}),
        (16, {"rotation": 10, "width_shift": 0.1, "height_shift": 0.1, "shear": 10, "zoom": 0.2, "horizontal_flip": True}),
        (64, {"rotation": 180, "width_shift": 1.0, "height_shift": 1.0, "shear": 89, "zoom": 0.99, "horizontal_flip": False}),
        (5, {"rotation": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0, "horizontal_flip": True}),
    ]
    gen = torch.Generator().manual_seed(3)
    for size, aug in cases:
        imgs = rng.integers(0, 256, size=(6, size, size, 3), dtype=np.uint8)
        params = draw_aug_params(6, size, aug, gen)
        got = augment_batch(to_unit(torch.from_numpy(imgs)), params).permute(0, 2, 3, 1).numpy()
        for i in range(6):
            want = augment_reference(imgs[i], size, *(float(p[i]) for p in params[:6]), bool(params[6][i]))
            worst = max(worst, float(np.abs(got[i] - want).max()))
    check("augmentation: affine_grid + grid_sample == per-pixel map", worst < 1e-4, f"max abs diff {worst:.2e}")
    ident = {k: 0.0 for k in AUG_FLOATS} | {"horizontal_flip": False}
    check("augmentation: all ranges 0 and no flip is skipped", aug_identity(ident))

    # 2. test carve
    names = [f"/d/train/cats/cat.{i}.jpg" for i in range(10)]
    train, test = carve_test(names, 0.25, "x")
    check("carve: round half away from zero (10 * 0.25 -> 3)", len(test) == 3 and len(train) == 7)
    key = sorted((hashlib.sha256(os.path.basename(p).encode()).digest(), p) for p in names)
    check("carve: lowest SHA-256 of the file name first", test == [p for _, p in key[:3]])
    check("carve: training part sorted by path", train == sorted(train))
    check("carve: clamp to [1, n - 2]", n_test_of(3, 0.01) == 1 and n_test_of(3, 0.99) == 1 and n_test_of(2000, 0.2) == 400)

    # 2b. listing, --limit before the carve, decoding (unreadable files skipped)
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        for split, count in (("train", 6), ("validation", 3)):
            for c, cls in enumerate(("dogs", "cats")):  # listed out of order on purpose
                os.makedirs(os.path.join(tmp, split, cls))
                for i in range(count):
                    Image.new("RGB", (20 + i, 12), (40 * i, 100 * c, 7)).save(os.path.join(tmp, split, cls, f"{cls}.{i}.png"))
                open(os.path.join(tmp, split, cls, "notes.txt"), "w").close()
        open(os.path.join(tmp, "train", "cats", "cats.00.JPG"), "w").write("not a jpeg")
        classes, train, val, test = list_dataset(tmp, 0.25, 5)
        cats = [p for p, lab in train + test if lab == 0]
        check("data: classes sorted, cats = 0", classes == ["cats", "dogs"])
        check(
            "data: first N by path per class, then the carve",
            len(cats) == 5 and os.path.basename(sorted(cats)[0]) == "cats.0.png"
            and sum(1 for _, lab in test if lab == 0) == 1 and len(test) == 2 and len(val) == 6,
        )
        x, y = decode(train + test, 8, 2)
        check("data: unreadable image skipped, uint8 NHWC", x.shape == (9, 8, 8, 3) and x.dtype == torch.uint8, str(tuple(x.shape)))

    # 3. parameters in mlci's order
    base = parse_model({"conv_blocks": [{"filters": 32, "padding": "same"}, {"filters": 64}], "dense": [{"units": 128, "dropout": 0.5}]})
    s = apply_params(base, {"conv_blocks": 4, "filters": 8, "kernel_size": 5, "dense_layers": 2, "dropout": 0.1})
    check(
        "params: conv_blocks then filters then kernel_size",
        [b["filters"] for b in s["conv_blocks"]] == [8, 16, 32, 64]
        and all(b["kernel_size"] == 5 for b in s["conv_blocks"])
        and [b["padding"] for b in s["conv_blocks"]] == ["same", "valid", "valid", "valid"],
    )
    check("params: dense layers copy the last", s["dense"] == [{"units": 128, "dropout": 0.1}] * 2)
    s = apply_params(base, {"conv_blocks": 3})
    check("params: added blocks double the last", [b["filters"] for b in s["conv_blocks"]] == [32, 64, 128])
    try:
        check_model(apply_params(base, {"conv_blocks": 6}))
        check("params: too many valid blocks are infeasible", False)
    except SpecProblem as e:
        check("params: too many valid blocks are infeasible", True, str(e))
    space = parse_space({"conv_blocks": {"type": "int", "min": 1, "max": 5}, "filters": {"type": "categorical", "values": [32, 48]}})
    pt, why = base_params(base, space)
    check("params: base point", pt == {"conv_blocks": 2, "filters": 32}, str(pt or why))
    space = parse_space({"kernel_size": {"type": "int", "min": 3, "max": 7, "step": 2}, "dropout": {"type": "float", "min": 0.0, "max": 0.4}})
    pt, why = base_params(base, space)
    check("params: base point outside the space is refused", pt is None, why)

    # 4. learning-rate schedule (mlci-core/tests/spec.rs)
    t = {"epochs": 10, "warmup_epochs": 1.0, "lr_schedule": "constant"}
    check("lr: warm-up", [lr_factor(t, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    t["lr_schedule"] = "cosine"
    check(
        "lr: cosine",
        lr_factor(t, 4, 4) == 1.0 and abs(lr_factor(t, 22, 4) - 0.5) < 1e-12 and lr_factor(t, 39, 4) < 0.01,
    )

    # 5. Wilson interval (mlci-core's published values)
    lo, hi = wilson(81, 263)
    check("wilson 81/263", abs(lo - 0.2553) < 5e-5 and abs(hi - 0.3662) < 5e-5, f"[{lo:.4f}, {hi:.4f}]")
    lo, hi = wilson(0, 20)
    check("wilson 0/20", lo == 0.0 and abs(hi - 0.1611) < 5e-5, f"[{lo:.4f}, {hi:.4f}]")

    # 6. the network: shapes, parameter count, one training step in channels_last
    spec = parse_model(
        {
            "input_size": 32,
            "conv_blocks": [{"filters": 8, "batch_norm": True}, {"filters": 16, "kernel_size": 5, "padding": "same"}],
            "dense": [{"units": 20, "dropout": 0.5}, {"units": 10}],
        }
    )
    flat, count = check_model(spec)
    model = build_model(spec, torch.Generator().manual_seed(1))
    n_params = sum(p.numel() for p in model.parameters())
    check("network: parameter count == mlci's architecture", n_params == count, f"{n_params} vs {count}")
    check("network: flattened width", model.head[0].in_features == flat == 7 * 7 * 16)
    x = to_unit(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
    check("network: batches are channels_last", x.is_contiguous(memory_format=torch.channels_last))
    opt = make_optimizer(spec, model.parameters())
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    loss.backward()
    opt.step()
    check("network: a training step", math.isfinite(float(loss.detach())) and model(x).shape == (4,))
    w = model.features[0].weight.detach()
    lim = math.sqrt(6 / (9 * 3 + 9 * 8))
    check("network: Glorot-uniform conv init range", float(w.abs().max()) <= lim + 1e-3)

    log(f"{'all passed' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


# ================================================================ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the benchmark, write the JSON result")
    run.add_argument("--spec", required=True, help="mlci experiment YAML (e.g. examples/experiment.yaml)")
    run.add_argument("--data", help="data set with train/ and validation/ (default: the spec's dataset.path)")
    run.add_argument("--seed", type=int, default=42, help="sampler seed; trial seed = seed*1000 + trial number")
    run.add_argument("--threads", type=int, default=2, help="decoding threads and torch threads (split between parallel trials)")
    run.add_argument("--limit", type=int, help="first N images per class per folder (before the test carve)")
    run.add_argument("--max-epochs", type=int, help="cap every trial's training.epochs (for quick tests)")
    run.add_argument("--max-wall-seconds", type=float, help="override budget.max_wall_seconds")
    run.add_argument("--no-enqueue-base", action="store_true", help="do not make trial 0 the base model")
    run.add_argument("--out", required=True, help="JSON result file")
    st = sub.add_parser("selftest", help="check the pieces that must match mlci")
    st.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for name in ("threads", "limit", "max_epochs"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer")
    if getattr(args, "max_wall_seconds", None) is not None and not args.max_wall_seconds > 0:
        ap.error("--max-wall-seconds must be positive")
    try:
        return cmd_run(args) if args.cmd == "run" else cmd_selftest(args)
    except BadInput as e:
        log(f"bench_goal_torch: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
