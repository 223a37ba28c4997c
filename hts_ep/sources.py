"""Where a page's records come from: the archive or a sweep at the book's profile, the data
sets that are gaps and why, and one sentence naming profile, devices, dates and training time."""
from dataclasses import dataclass, field

from . import data, experiments
from .stats import device_of  # noqa: F401  where records come from names their device


def spec_datasets(spec, datasets=None):
    """The data sets of a spec's grid (or its fixed one), restricted to `datasets`."""
    spec_obj = experiments.load_spec(spec)
    grid = spec_obj.grid.get("dataset") or [spec_obj.fixed.get("dataset", "mnist")]
    return [ds for ds in grid if datasets is None or ds in datasets]


def load(spec, profile, results_root=None, data_root=None, datasets=None, seeds=None, overrides=None):
    """Records of a spec (optionally some data sets / other seeds / overrides, as in
    `experiments.sweep`) and, for each data set some of whose runs have no record, the reason it
    cannot run here (if it cannot): a data set whose records are complete is no gap, whatever this
    machine's data."""
    recs = experiments.records(spec, profile, results_root, datasets, seeds, overrides)
    configs = experiments.grid_configs(experiments.load_spec(spec), profile, datasets, seeds, overrides)
    have = {experiments.key(experiments.Config.from_dict(r["config"])) for r in recs}
    short = {c.dataset for c in configs if experiments.key(c) not in have}
    gaps = {ds: reason for ds in spec_datasets(spec, datasets) if ds in short
            and (reason := data.unavailable(ds, data_root))}
    return recs, gaps


@dataclass
class Results:
    """The records a page shows for one experiment, and where they come from."""
    spec: str
    profile: str                # whose records these are
    archived: bool              # read from the archive, never trained by this build
    records: list
    gaps: dict                  # dataset -> why it has no records
    overrides: dict = field(default_factory=dict)

    @property
    def gap_label(self):
        return "not archived" if self.archived else "no data"

    @property
    def missing(self):
        return "not archived" if self.archived else "not run"

    def source(self):
        return source(self.records, self.profile, self.archived, self.overrides)


def obtain(spec, profile, data_root=None, device=None, datasets=None, seeds=None, overrides=None,
           results_root=None):
    """The records of `spec` for a page under the book's `profile` (see `experiments.resolve`):
    archived paper-profile records as they are, or the profile's, trained here where missing."""
    overrides = experiments.check_overrides(overrides)
    shown, may_train = experiments.resolve(spec, profile, results_root, datasets, seeds, overrides)
    if may_train:
        experiments.sweep(spec, shown, results_root=results_root, data_root=data_root, device=device,
                          datasets=datasets, seeds=seeds, overrides=overrides)
    recs, gaps = load(spec, shown, results_root, data_root, datasets, seeds, overrides)
    gaps = {ds: public(reason, data_root) for ds, reason in gaps.items()}
    if not may_train:       # the archive's own gaps: data sets it holds no record of
        have = {r["config"]["dataset"] for r in recs}
        gaps = {ds: f"not in the {shown}-profile archive" + (f"; {gaps[ds]}" if ds in gaps else "")
                for ds in spec_datasets(spec, datasets) if ds not in have}
    return Results(spec, shown, not may_train, recs, gaps, overrides)


def duration(hours):
    """Hours in words: '5.3 h', '12 min', '<1 min'."""
    minutes = 60 * hours
    return f"{hours:.1f} h" if minutes >= 59.5 else f"{minutes:.0f} min" if minutes >= 0.5 else "<1 min"


def compute_hours(records):
    """{device: hours} the records took to train, evaluation included: the sum of
    their epochs' seconds, each divided by the size of the ensemble it was trained in (an
    epoch's time is the whole ensemble's, written into each of its models' records). Records
    without epoch times count zero; their device is left out if none has any."""
    hours = {}
    for r in records:
        env = r.get("environment") or {}
        size = env.get("ensemble_size") or 1
        seconds = sum(e.get("seconds") or 0 for e in r.get("epochs", []))
        if seconds:
            hours[device_of(r)] = hours.get(device_of(r), 0.0) + seconds / size / 3600
    return dict(sorted(hours.items()))


def source(records, profile, archived=False, overrides=None, no_date=None):
    """Where the numbers of `records` come from: profile, device(s), date(s) and training time,
    in one sentence (records written before they carried a date count as "unknown"; if none
    has a date, `no_date` replaces "trained on unknown" where given)."""
    text = f"profile {profile}" + (", archived records not retrained by this build" if archived else "")
    if not records:
        return text + "; no runs."
    dates = sorted({r["finished"][:10] for r in records if r.get("finished")})
    undated = sum(1 for r in records if not r.get("finished"))
    when = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "unknown"
    if dates and undated:
        when += f" ({undated} of {len(records)} undated)"
    text += (f"; {len(records)} run{'s' if len(records) != 1 else ''} on "
             f"{', '.join(sorted({device_of(r) for r in records}))}, "
             + (no_date if no_date and not dates else f"trained on {when}"))
    hours = compute_hours(records)
    span = {dev: duration(h) for dev, h in hours.items()}
    devices = {device_of(r) for r in records}
    if span:
        text += "; training time " + ", ".join(t + (f" on {dev}" if len(devices) > 1 else "")
                                               for dev, t in span.items()) + " (summed over its ensembles)"
    if overrides:
        text += "; overrides " + ", ".join(f"{k} = {v!r}" for k, v in overrides.items())
    return text + "."


def public(reason, data_root=None):
    """A gap's reason without the build machine's data path."""
    root = str(data.data_root(data_root))
    return reason.replace(root + "/", "the data folder's ").replace(root, "the data folder") if reason else reason




def calibration(folder=None):
    """The calibration's archived records (results/calibration/): {"screen", "finalists",
    "fashion", "legacy"} -> lists of records (empty where a file is missing), and the folder read.
    Under the results store, else in the repository, so that a build into another store (the
    tests' smoke build) still reads the committed calibration."""
    from pathlib import Path

    from .train import check_record, read_json
    candidates = [experiments.RESULTS / "calibration", experiments.REPO / "results" / "calibration"]
    folder = Path(folder) if folder else next((p for p in candidates if p.is_dir()), candidates[0])

    def read(where, pattern):
        """The records of each file (checked as the store checks records; the screen's were cut
        before their last epoch, so a record need only be complete where it says it is)."""
        out = []
        for f in sorted(where.glob(pattern)):
            records = read_json(f)
            if not isinstance(records, dict) or not isinstance(records.get("records"), list):
                raise ValueError(f"{f}: not a file of records (a JSON object with a list 'records')")
            for r in records["records"]:
                try:
                    check_record(r, complete=r.get("complete") is True)
                except ValueError as error:
                    raise ValueError(f"{f}: {error}") from None
                out.append(r)
        return out
    return {"screen": read(folder / "branch", "mnist-screen.json"),
            "finalists": read(folder / "branch", "mnist-finalists.json"),
            "fashion": read(folder / "branch", "fashion-mnist-check.json"),
            "legacy": read(folder, "mnist-*.json")}, folder


def archived(spec, profile, datasets=None, overrides=None):
    """The complete records of `spec` at `profile` (with `overrides`) from the results store, else from
    the repository's own results/ (a build into another store, such as the tests' smoke build,
    still reads the archive committed with the code)."""
    recs = experiments.records(spec, profile, datasets=datasets, overrides=overrides)
    if not recs and experiments.RESULTS.resolve() != (experiments.REPO / "results").resolve():
        recs = experiments.records(spec, profile, results_root=experiments.REPO / "results", datasets=datasets,
                                   overrides=overrides)
    return recs
