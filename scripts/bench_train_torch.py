#!/usr/bin/env python3
"""PyTorch peer of the mlci training benchmark, plus helpers for scripts/bench-train.

Subcommands:
  train   train the benchmark CNN with PyTorch on CPU; prints one JSON line per
          epoch on stdout (same fields as mlci's "epoch" events), progress on stderr.
          What it does, like mlci: in epoch 1, decode every training and
          validation JPEG on --threads threads (a thread pool; PIL open, RGB,
          bilinear resize to 64x64, as mlci's image crate with its triangle
          filter), cache them in memory; each epoch, one training pass
          (batch 32, shuffled, Adam) and one validation pass (batch 128, as
          mlci's evaluation, under torch.inference_mode()). Compute on
          torch.set_num_threads(--threads), one inter-op thread. --variant:
          eager-nchw (default NCHW tensors), eager-cl (channels_last model and
          batches), compile-cl (eager-cl under torch.compile, default mode; the
          compilation falls in epoch 1; if it fails, one "unavailable" event
          with the reason instead of epochs).
  list    print the image files a run uses ("split/class/file", one a line)
  watch   follow a growing JSON-lines log of a running process, print progress,
          optionally stop the process once val_accuracy reaches a target
  report  print the comparison table from an mlci log and PyTorch logs

Only `train` needs torch; the other subcommands use the standard library only.
"""

import argparse
import json
import os
import statistics
import sys
import time

SPLITS = ("train", "validation")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
INPUT_SIZE = 64
BATCH_SIZE = 32
VAL_BATCH_SIZE = 128  # mlci's evaluation batch (EVAL_BATCH in mlci-train)
LEARNING_RATE = 1e-3


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- file list


def list_split(data_dir, split, limit=None):
    """[(path, label)] for one split; classes are sorted sub-folder names
    (label = index), files sorted by name, first `limit` per class."""
    root = os.path.join(data_dir, split)
    classes = sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
    )
    if len(classes) != 2:
        sys.exit(f"{root}: expected 2 class folders, found {classes}")
    items = []
    for label, cls in enumerate(classes):
        names = sorted(
            n
            for n in os.listdir(os.path.join(root, cls))
            if n.lower().endswith(IMAGE_EXTENSIONS)
        )
        if limit is not None:
            names = names[:limit]
        items.extend((os.path.join(root, cls, n), label) for n in names)
    return classes, items


def cmd_list(args):
    for split in SPLITS:
        _, items = list_split(args.data, split, args.limit)
        for path, _ in items:
            print(os.path.relpath(path, args.data))


# ---------------------------------------------------------------- training

VARIANTS = {
    # name: (memory format, torch.compile)
    "eager-nchw": ("nchw", False),
    "eager-cl": ("channels_last", False),
    "compile-cl": ("channels_last", True),
}


def decode_all(items, threads):
    """(uint8 array [n, 64, 64, 3] of the decoded, RGB-converted, bilinearly
    resized images, float32 labels [n, 1]), decoded on `threads` threads
    (PIL releases the GIL while it decodes and resizes)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    def one(path):
        with Image.open(path) as im:
            im = im.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pixels = list(pool.map(one, [p for p, _ in items], chunksize=16))
    x = np.stack(pixels) if pixels else np.empty((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    y = np.array([[float(label)] for _, label in items], dtype=np.float32).reshape(-1, 1)
    return x, y


def cmd_train(args):
    # Thread settings must precede any parallel work in torch.
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    from torch import nn

    layout, compiled = VARIANTS[args.variant]
    channels_last = layout == "channels_last"
    torch.manual_seed(args.seed)

    feat = 64 * ((((INPUT_SIZE - 2) // 2) - 2) // 2) ** 2
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(feat, 128),
        nn.ReLU(),
        nn.Linear(128, 1),
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(args.seed)
    forward = model
    if compiled:
        forward = torch.compile(model)

    classes, train_items = list_split(args.data, "train", args.limit)
    _, val_items = list_split(args.data, "validation", args.limit)
    print(
        json.dumps(
            {
                "event": "start",
                "framework": "pytorch",
                "variant": args.variant,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "decode_threads": args.threads,
                "classes": classes,
                "train_images": len(train_items),
                "val_images": len(val_items),
                "train_batch": BATCH_SIZE,
                "val_batch": VAL_BATCH_SIZE,
            }
        ),
        flush=True,
    )

    def images(cache, idx):
        """A float batch [n, 3, 64, 64] in [0, 1]: NCHW-contiguous, or the
        NHWC cache viewed as NCHW (PyTorch's channels_last)."""
        xb = cache[idx].permute(0, 3, 1, 2)
        return xb if channels_last else xb.contiguous()

    def run_epoch(train_x, train_y, val_x, val_y):
        """One training pass (batches of BATCH_SIZE, shuffled) and one
        validation pass (batches of VAL_BATCH_SIZE, inference mode)."""
        model.train()
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(len(train_x), generator=gen).split(BATCH_SIZE):
            xb, yb = images(train_x, idx), train_y[idx]
            logits = forward(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += ((logits.detach() > 0).float() == yb).sum().item()
        model.eval()
        val_loss_sum, val_correct = 0.0, 0
        with torch.inference_mode():
            for s in range(0, len(val_x), VAL_BATCH_SIZE):
                idx = slice(s, s + VAL_BATCH_SIZE)
                xb, yb = images(val_x, idx), val_y[idx]
                logits = forward(xb)
                val_loss_sum += loss_fn(logits, yb).item() * len(xb)
                val_correct += ((logits > 0).float() == yb).sum().item()
        return loss_sum, correct, val_loss_sum, val_correct

    train_x = train_y = val_x = val_y = None
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        decode_s = 0.0
        if train_x is None:  # first epoch: decode both splits once, cache in memory
            (tx, ty), (vx, vy) = decode_all(train_items, args.threads), decode_all(val_items, args.threads)
            # Cached as float32 NHWC in [0, 1].
            train_x = torch.from_numpy(tx).float().div_(255.0)
            val_x = torch.from_numpy(vx).float().div_(255.0)
            train_y, val_y = torch.from_numpy(ty), torch.from_numpy(vy)
            decode_s = time.perf_counter() - t0

        try:
            loss_sum, correct, val_loss_sum, val_correct = run_epoch(train_x, train_y, val_x, val_y)
        except Exception as e:  # torch.compile needs a working C++ toolchain
            if not compiled or epoch > 1:
                raise
            text = str(e).strip()
            reason = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]
            print(json.dumps({"event": "unavailable", "variant": args.variant, "reason": reason}), flush=True)
            log(f"  pytorch {args.variant}: torch.compile failed: {reason}")
            return 0
        n, nv = len(train_items), len(val_items)
        seconds = time.perf_counter() - t0

        ev = {
            "event": "epoch",
            "epoch": epoch,
            "epochs": args.epochs,
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "val_loss": val_loss_sum / max(nv, 1),
            "val_accuracy": val_correct / max(nv, 1),
            "seconds": seconds,
            "decode_seconds": decode_s,
            "train_images": n,
            "images_per_second": n / seconds,
        }
        print(json.dumps(ev), flush=True)
        log(progress_line(f"pytorch {args.variant}", ev))
    return 0


# ---------------------------------------------------------------- log parsing


def progress_line(label, ev):
    return (
        f"  {label} epoch {ev['epoch']}/{ev.get('epochs', '?')}: "
        f"{ev['images_per_second']:.1f} img/s, {ev['seconds']:.1f} s, "
        f"loss {ev.get('loss', float('nan')):.4f}, "
        f"val_acc {ev.get('val_accuracy', float('nan')):.4f}"
    )


def parse_event(line):
    """The dict of a JSON line with "event":"epoch", else None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict) or ev.get("event") != "epoch":
        return None
    try:
        ev["epoch"] = int(ev["epoch"])
        ev["images_per_second"] = float(ev["images_per_second"])
        ev["seconds"] = float(ev.get("seconds", "nan"))
    except (KeyError, TypeError, ValueError):
        return None
    return ev


def read_epochs(path):
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [ev for ev in map(parse_event, f) if ev is not None]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def cmd_watch(args):
    """Follow args.log while process args.pid runs; print each epoch event.
    With --target, stop the process once val_accuracy >= target and print
    the epoch. Exit status: 0 normally, 3 if the target was not reached."""
    reached = None
    seen = 0
    elapsed = 0.0
    buf = ""
    with open(args.log, encoding="utf-8", errors="replace") as f:
        while True:
            alive = pid_alive(args.pid)
            chunk = f.read()
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                ev = parse_event(line)
                if ev is None:
                    continue
                seen += 1
                elapsed += ev["seconds"]
                log(progress_line(args.label, ev))
                acc = ev.get("val_accuracy")
                if (
                    args.target is not None
                    and isinstance(acc, (int, float))
                    and acc >= args.target
                ):
                    reached = ev
                    break
            if reached is not None:
                if alive:
                    os.kill(args.pid, 15)
                break
            if not alive and not chunk:
                break
            if not chunk:
                time.sleep(0.2)
    if args.target is None:
        return 0
    if reached is None:
        print(
            f"{args.label}: val_accuracy never reached {args.target} "
            f"({seen} epochs seen)"
        )
        return 3
    print(
        f"{args.label}: val_accuracy {reached['val_accuracy']:.4f} >= "
        f"{args.target} first at epoch {reached['epoch']} "
        f"(after {elapsed:.1f} s of epochs)"
    )
    return 0


def summarize(epochs):
    """(first-epoch img/s, median img/s of epochs 2.., last val_accuracy)."""
    by_epoch = {ev["epoch"]: ev for ev in epochs}
    first = by_epoch.get(1, {}).get("images_per_second")
    later = [ev["images_per_second"] for e, ev in sorted(by_epoch.items()) if e >= 2]
    last = by_epoch[max(by_epoch)].get("val_accuracy") if by_epoch else None
    return first, (statistics.median(later) if later else None), last


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


def first_event(path, kind):
    """The first event of `kind` in a PyTorch log ("start", "unavailable"), else None."""
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == kind:
                return ev
    return None


def start_event(path):
    """The "start" event of a PyTorch log, else None."""
    return first_event(path, "start")


def unavailable_reason(path):
    """The reason of an "unavailable" event in a log (torch.compile failed), else None."""
    ev = first_event(path, "unavailable")
    return None if ev is None else str(ev.get("reason", "unavailable"))


def cmd_report(args):
    rows = {}
    notes = {}
    if args.mlci:
        rows["mlci"] = summarize(read_epochs(args.mlci))
    for spec in args.torch or []:
        label, _, path = spec.partition("=")
        name = f"pytorch {label}"
        rows[name] = summarize(read_epochs(path))
        reason = unavailable_reason(path)
        if reason:
            notes[name] = reason
    print(f"machine: {args.machine}, {args.threads} threads")
    for spec in args.torch or []:
        start = start_event(spec.partition("=")[2])
        if start:
            print(
                f"pytorch {start.get('torch')}: {start.get('threads')} compute threads, "
                f"{start.get('interop_threads')} inter-op, {start.get('decode_threads')} decoding threads, "
                f"batches {start.get('train_batch')} (training) and {start.get('val_batch')} (validation)"
            )
            break
    print(f"{'':22}{'epoch-1 img/s':>15}{'later img/s':>14}{'val_acc(last)':>16}")
    for name, (first, later, acc) in rows.items():
        if name in notes:
            print(f"{name:22}{'did not run: ' + notes[name]}")
            continue
        print(f"{name:22}{fmt(first, '.1f'):>15}{fmt(later, '.1f'):>14}{fmt(acc, '.4f'):>16}")

    mlci = rows.get("mlci")
    peers = {k: v for k, v in rows.items() if k != "mlci" and k not in notes}

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    if mlci and peers:
        print("ratio mlci/pytorch (>=1.0 means mlci is faster):")
        for name, r in peers.items():
            print(f"  vs {name:20} first {ratio(mlci[0], r[0])}, later {ratio(mlci[1], r[1])}")
        best_first = max((r[0] for r in peers.values() if r[0]), default=None)
        best_later = max((r[1] for r in peers.values() if r[1]), default=None)
        print(
            f"  vs the fastest PyTorch row of each column: first {ratio(mlci[0], best_first)}, "
            f"later {ratio(mlci[1], best_later)}"
        )
    missing = [name for name, r in rows.items() if r[0] is None and name not in notes]
    return 1 if missing else 0


# ---------------------------------------------------------------- main


def positive_int(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {s}")
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train with PyTorch on CPU")
    t.add_argument("--data", required=True)
    t.add_argument("--threads", type=positive_int, default=2)
    t.add_argument("--epochs", type=positive_int, default=3)
    t.add_argument("--limit", type=positive_int, help="images per class per split")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--variant", choices=sorted(VARIANTS), default="eager-cl")

    ls = sub.add_parser("list", help="print the files a run uses")
    ls.add_argument("--data", required=True)
    ls.add_argument("--limit", type=positive_int)

    w = sub.add_parser("watch", help="follow a running process's JSON log")
    w.add_argument("--log", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--label", default="mlci")
    w.add_argument("--target", type=float, help="stop once val_accuracy >= this")

    r = sub.add_parser("report", help="print the comparison table")
    r.add_argument("--mlci", help="mlci stdout log")
    r.add_argument(
        "--torch", action="append", metavar="VARIANT=LOG", help="a PyTorch variant's stdout log (repeatable)"
    )
    r.add_argument("--machine", default="unknown CPU")
    r.add_argument("--threads", default="?")

    args = p.parse_args()
    handler = {"train": cmd_train, "list": cmd_list, "watch": cmd_watch, "report": cmd_report}
    sys.exit(handler[args.cmd](args) or 0)


if __name__ == "__main__":
    main()
