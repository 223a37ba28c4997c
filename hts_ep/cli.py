"""The `hts-ep` command line."""
import argparse
import dataclasses
import itertools
import logging
import os
import sys
import time

from . import __version__
from .config import DATASETS, INPUT_SCALINGS, NUDGE_SCHEMES, SHARED_FIELDS, Config
from .sampler import DISTRIBUTIONS

log = logging.getLogger("hts_ep.cli")


class StderrHandler(logging.StreamHandler):
    """Log records to whatever sys.stderr is when they are emitted (a test may swap it)."""
    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("hts-ep: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def format(self, record):
        text = super().format(record)
        return text.replace("hts-ep: ", "hts-ep: warning: ", 1) if record.levelno == logging.WARNING else text


def log_to_stderr():
    """The package's progress and warnings (errors.py's rule) on the terminal, once."""
    logger = logging.getLogger("hts_ep")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
    logger.setLevel(logging.INFO)


class UserError(Exception):
    """Bad input: reported in one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, like every other bad input (argparse's default prints the usage block first).
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_options(p):
    """One option per Config field. Per-model fields take several values: the
    product of all given values is trained as one ensemble."""
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        choices = {"dataset": DATASETS, "distribution": DISTRIBUTIONS, "nudge_from": NUDGE_SCHEMES,
                   "inputs": INPUT_SCALINGS}.get(f.name)
        kind = bound if f.name == "h_bound" else type(f.default)
        if f.name in SHARED_FIELDS:
            p.add_argument(flag, type=kind, default=f.default, choices=choices, help=f"default {f.default}")
        else:
            p.add_argument(flag, type=kind, default=[f.default], nargs="+", choices=choices,
                           help=f"default {f.default}; several values train an ensemble")


def bound(text):
    """--h-bound: 'none' (unbounded) or a number."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'none' or a number") from None


def add_set_option(p):
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="replace a Config field in every model of the grid (repeatable; values as YAML, "
                        "e.g. --set h_bound=none --set inputs=unit --set nudge_from=branch, the set-up before the "
                        "fidelity ablation); such models are stored apart")


def add_run_options(p):
    p.add_argument("--data-root", default=None,
                   help="folder holding <Name>/raw/ (else $HTS_EP_DATA, else the user cache)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def configs_from_args(args):
    """The ensemble's configs, each checked (values, and shapes and subsets against the data set)."""
    from . import data
    shared = {name: getattr(args, name) for name in SHARED_FIELDS}
    axes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if f.name not in SHARED_FIELDS}
    for name, values in axes.items():
        if len(set(values)) != len(values):
            raise UserError(f"--{name.replace('_', '-')} has duplicates: {values}")
    configs = []
    for combo in itertools.product(*axes.values()):
        try:
            config = Config(**shared, **dict(zip(axes, combo)))
        except ValueError as error:     # Config names the field and what it allows
            raise UserError(str(error)) from None
        data.check_config(config)
        configs.append(config)
    return configs


# Chosen: more cores than one machine this runs on has; past a few thousand OpenMP aborts the
# process while allocating its threads' stacks (libgomp: out of memory), with no message of ours.
MAX_THREADS = 1024


def check_threads(threads):
    if threads is not None and threads < 1:
        raise UserError(f"--threads={threads} must be >= 1")
    if threads is not None and threads > MAX_THREADS:
        raise UserError(f"--threads={threads} must be <= {MAX_THREADS}")


def set_threads(threads):
    import torch
    check_threads(threads)
    torch.set_num_threads(threads or os.cpu_count() or 1)


def cmd_train(args):
    from .train import check_device, check_kernel, check_out, check_resumable, check_writable, train, write_json
    # Every check before any work: a bad value found after hours of training costs the hours.
    configs = configs_from_args(args)
    check_threads(args.threads)
    check_kernel()
    check_device(args.device)
    check_writable(args.out, "--out")
    check_out(args.out)                 # a file someone made is not replaced
    if args.checkpoint is not None:
        check_writable(args.checkpoint, "--checkpoint")
        if not args.replace_checkpoint:
            check_resumable(args.checkpoint, configs)
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


def cmd_sweep(args):
    from . import experiments
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers={args.workers} must be >= 1")
    if args.max_group < 1:
        raise UserError(f"--max-group={args.max_group} must be >= 1")
    check_threads(args.threads)
    from .train import check_kernel
    check_kernel()
    lock_wait = experiments.lock_wait_seconds(args.lock_wait)
    overrides = parse_sets(args.set)
    if args.dataset:
        spec_datasets = {c.dataset for c in experiments.grid_configs(experiments.load_spec(args.spec), args.profile)}
        outside = [d for d in args.dataset if d not in spec_datasets]
        if outside:
            raise UserError(f"--dataset {', '.join(outside)}: not in {args.spec}'s grid; allowed: "
                            f"{', '.join(d for d in DATASETS if d in spec_datasets)}")
    if args.dry_run:
        from .train import check_device
        check_device(args.device)
        p = experiments.plan(args.spec, args.profile, data_root=args.data_root, max_group=args.max_group,
                             device=args.device, overrides=overrides, datasets=args.dataset)
        print(experiments.describe(p, args.device, args.threads))
        return
    if not (args.workers or args.scheduler):
        set_threads(args.threads)
    start = time.perf_counter()
    p = experiments.sweep(args.spec, args.profile, data_root=args.data_root, device=args.device,
                          threads=args.threads, max_group=args.max_group, workers=args.workers,
                          scheduler=args.scheduler, progress=not args.no_progress, lock_wait=lock_wait,
                          overrides=overrides, datasets=args.dataset)
    if p.skipped and not p.missing and not p.cached:
        # Nothing could run at all: a success status would hide that from scripts and schedulers.
        reasons = "; ".join(f"{ds}: {reason}" for ds, reason in p.skipped.items())
        raise UserError(f"{args.spec}/{args.profile}: nothing to train, no data set of the spec is "
                        f"available here ({reasons})")
    if args.no_progress:            # else describe() has said so already
        for ds, reason in p.skipped.items():
            log.warning("skipped %s: %s", ds, reason)
    others = len(p.missing) - len(p.trained)
    print(f"{args.spec}/{args.profile}: trained {len(p.trained)} models in "
          f"{time.perf_counter() - start:.0f} s; {len(p.cached)} were cached"
          + (f"; {others} were trained meanwhile by another sweep" if others else ""))


def parse_sets(sets):
    """--set FIELD=VALUE options as a checked overrides dict (values read as YAML: 1.2, null, unit)."""
    import yaml

    from .experiments import check_overrides
    out = {}
    for item in sets or []:
        field, eq, text = item.partition("=")
        if not eq or not field.strip():
            raise UserError(f"--set {item!r}: not FIELD=VALUE; e.g. --set h_bound=2.0 --set inputs=unit")
        if not text.strip():
            raise UserError(f"--set {item!r}: no value; e.g. --set h_bound=2.0 (--set h_bound=none: unbounded)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and value.lower() == "none":       # as --h-bound none
            value = None
        out[field.strip().replace("-", "_")] = value
    return check_overrides(out)


def describe_run(config, axes):
    """One missing run in words: its grid values and seed."""
    return " ".join(f"{a}={getattr(config, a)}" for a in axes) + f" seed {config.seed}"


def cmd_table(args):
    from . import data, experiments, sources, stats, tables, wording
    experiments.check_store(args.profile)
    spec = experiments.load_spec(args.spec)
    configs = experiments.grid_configs(spec, args.profile, overrides=parse_sets(args.set))
    store = experiments.Store(args.profile)
    recs = [r for c in configs if (r := store.get(c)) is not None]
    bad = store.problems
    absent = [c for c in configs if not os.path.lexists(store.path(c))]
    # A data set is a gap only where runs of it have no record, whatever this machine's data:
    # an archive read without the data sets is complete where its records are.
    datasets = list(dict.fromkeys(c.dataset for c in configs))
    short = {ds: [c for c in absent if c.dataset == ds] for ds in datasets}
    total = {ds: sum(c.dataset == ds for c in configs) for ds in datasets}
    unavailable = {ds: reason for ds in datasets if short[ds] and (reason := data.unavailable(ds, args.data_root))}
    if args.spec == "table1":
        frame = tables.table1(recs, gaps=unavailable, stat=args.stat)
    else:
        frame = stats.by_grid_point(recs, args.spec)     # every axis of the grid kept apart
    if args.format == "csv":
        print(frame.to_csv())
    else:
        what = wording.STAT_LABELS[args.stat] if args.spec == "table1" else wording.STAT_LABELS["final"]
        print(f"{args.spec}, profile {args.profile}: {len(recs)} records (test accuracy % at each run's {what}, "
              "mean ± std over seeds)")
        print(f"source: {sources.source(recs, args.profile, archived=args.profile == 'paper')}")
        print(frame.to_markdown())
        for ds in datasets:
            if short[ds]:
                print(f"\ngap {ds}: {len(short[ds])} of {total[ds]} runs have no record"
                      + (f"; {unavailable[ds]}" if ds in unavailable else ""))
    # Records that exist but could not be used are left out of the table above:
    # name each, and fail, so that neither a reader nor a script takes the table as whole.
    for path, reason in bad:
        log.warning("corrupted or incomplete record %s (%s): left out of the table; "
                    "`hts-ep sweep %s --profile %s` retrains it", path, reason, args.spec, args.profile)
    # So are runs without a record that this machine could train: said, and a failure too. Those of
    # a data set it cannot read are the gaps printed above, for a reason the sweep cannot fix here.
    trainable = [c for c in absent if c.dataset not in unavailable]
    if trainable:
        axes = stats.grid_axes(spec)
        counts = "; ".join(f"{ds}: {n} of {total[ds]}" for ds in datasets
                           if (n := sum(c.dataset == ds for c in trainable)))
        shown = ", ".join(describe_run(c, axes) for c in trainable[:MISSING_SHOWN])
        more = f" and {len(trainable) - MISSING_SHOWN} more" if len(trainable) > MISSING_SHOWN else ""
        log.warning("%d of %d runs of the grid have no record (%s): %s%s; `hts-ep sweep %s --profile %s` "
                    "trains them", len(trainable), len(configs), counts, shown, more, args.spec, args.profile)
    return 1 if bad or trainable else 0


MISSING_SHOWN = 5       # missing runs `table` names one by one (the rest are counted)


def parser():
    p = Parser(prog="hts-ep", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model, or several as one ensemble")
    add_model_options(t)
    add_run_options(t)
    t.add_argument("--out", required=True, help="JSON file for the records (written atomically)")
    t.add_argument("--checkpoint", default=None, help="file updated each epoch; rerunning resumes from it")
    t.add_argument("--replace-checkpoint", action="store_true",
                   help="start over in --checkpoint even if it holds another run or is no checkpoint")
    t.set_defaults(func=cmd_train)

    from .experiments import spec_names
    s = sub.add_parser("sweep", help="train every missing record of an experiment spec")
    s.add_argument("spec", choices=spec_names(), help="an experiment of experiments/ (its grid of models)")
    s.add_argument("--profile", default="quick", help="a profile of experiments/profiles.yaml (smoke, quick, "
                   "screen, paper)")
    s.add_argument("--dry-run", action="store_true", help="only say what is cached, missing and how long it takes")
    s.add_argument("--max-group", type=int, default=20, help="models per ensemble (default 20)")
    s.add_argument("--workers", type=int, default=None, help="start a local Dask cluster of N worker processes")
    s.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://host:port")
    s.add_argument("--lock-wait", default=None, metavar="SECONDS",
                   help="how long to wait for models another process is training, then fail "
                        "(default: $HTS_EP_LOCK_WAIT, else a day)")
    s.add_argument("--dataset", action="append", choices=DATASETS, default=None,
                   help="train only this data set's part of the grid (repeatable; default: all of the spec's)")
    add_set_option(s)
    add_run_options(s)
    s.set_defaults(func=cmd_sweep)

    tb = sub.add_parser("table", help="print an experiment's aggregated table")
    tb.add_argument("spec", choices=spec_names(), help="an experiment of experiments/")
    tb.add_argument("--profile", default="quick", help="whose records: a profile of experiments/profiles.yaml "
                    "(smoke, quick, screen, paper)")
    tb.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    tb.add_argument("--stat", choices=["final", "best", "last5"], default="final",
                    help="each run's accuracy at its final epoch (default), its best epoch (on the test set, "
                         "as the first author's code reports it) or the mean of its last 5 epochs (table1 only)")
    tb.add_argument("--data-root", default=None, help="folder holding <Name>/raw/: only to say why a data set "
                    "without records cannot be trained here")
    add_set_option(tb)
    tb.set_defaults(func=cmd_table)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    log_to_stderr()
    from .data import DataMismatchError, DataMissingError
    from .distributed import SchedulerError
    from .experiments import SpecError, StoreError
    from .train import InputError
    # The package's own errors only: they carry a message for the user. Anything
    # else is a bug, and its traceback is what a bug report needs.
    try:
        return args.func(args) or 0
    except (UserError, SpecError, StoreError, InputError, DataMismatchError, DataMissingError,
            SchedulerError) as error:
        print(f"hts-ep: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hts-ep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
