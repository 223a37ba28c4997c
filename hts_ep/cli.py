"""The `hts-ep` command line."""
import argparse
import dataclasses
import itertools
import os
import sys

from .config import DATASETS, SHARED_FIELDS, Config
from .sampler import DISTRIBUTIONS


class UserError(Exception):
    """Bad input: reported in one line, without a traceback."""


def add_model_options(p):
    """One option per Config field. Per-model fields take several values: the
    product of all given values is trained as one ensemble."""
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        choices = {"dataset": DATASETS, "distribution": DISTRIBUTIONS}.get(f.name)
        if f.name in SHARED_FIELDS:
            p.add_argument(flag, type=type(f.default), default=f.default, choices=choices,
                           help=f"default {f.default}")
        else:
            p.add_argument(flag, type=type(f.default), default=[f.default], nargs="+", choices=choices,
                           help=f"default {f.default}; several values train an ensemble")


def add_run_options(p):
    p.add_argument("--data-root", default=None, help="folder holding <Name>/raw/ (else $HTS_EP_DATA, else the user cache)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def configs_from_args(args):
    shared = {name: getattr(args, name) for name in SHARED_FIELDS}
    axes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if f.name not in SHARED_FIELDS}
    for name, values in axes.items():
        if len(set(values)) != len(values):
            raise UserError(f"--{name.replace('_', '-')} has duplicates: {values}")
    return [Config(**shared, **dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]


def set_threads(threads):
    import torch
    n = threads or os.cpu_count() or 1
    if n < 1:
        raise UserError(f"--threads={threads} must be >= 1")
    torch.set_num_threads(n)


def cmd_train(args):
    from .train import train, write_json
    configs = configs_from_args(args)
    set_threads(args.threads)
    records = train(configs, data_root=args.data_root, device=args.device,
                    progress=not args.no_progress, checkpoint=args.checkpoint)
    write_json(args.out, {"records": records})
    for r in records:
        c, last = r["config"], r["epochs"][-1]
        acc = "diverged" if last["test_acc"] is None else f"{100 * last['test_acc']:.2f}%"
        print(f"{c['dataset']} {c['distribution']:>9} eps_out={c['eps_out']:.2f} seed={c['seed']}: "
              f"test {acc}, {last['seconds']:.1f} s/epoch")
    print(f"wrote {len(records)} records to {args.out}")


def parser():
    p = argparse.ArgumentParser(prog="hts-ep", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model, or several as one ensemble")
    add_model_options(t)
    add_run_options(t)
    t.add_argument("--out", required=True, help="JSON file for the records (written atomically)")
    t.add_argument("--checkpoint", default=None, help="file updated each epoch; rerunning resumes from it")
    t.set_defaults(func=cmd_train)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from .data import DataMissingError
    try:
        args.func(args)
    except (UserError, ValueError, DataMissingError) as error:
        print(f"hts-ep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hts-ep: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
