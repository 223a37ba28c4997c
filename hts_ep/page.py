"""What every chapter notebook does besides its science: set up, glue values, show notes.

A chapter's visible cells say which runs, which function and which figure; this module keeps
the plumbing out of them."""
import math
import numbers

from . import figures, wording


def setup(threads=None):
    """The book's figure style, plain-text progress bars (papermill's log shows a sweep's
    progress, the page drops stderr) and torch's CPU threads (None: leave them)."""
    import tqdm
    import tqdm.auto
    tqdm.auto.tqdm = tqdm.tqdm
    figures.style()
    import pandas as pd
    pd.set_option("display.max_colwidth", None)      # a table's sentences whole, never cut with "..."
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


def value(v):
    """`v` as the plain Python number or text glue stores: numpy scalars become float or int, so
    that the Markdown's format spec ({glue:text}`key:.2f`) reads them."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v if v is not None else "n/a"
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        if math.isnan(v):
            raise ValueError("a NaN reached the page: say in words why the value is missing (wording)")
        return v
    return v


def glue(values, prefix=""):
    """Glue every item of `values` under `prefix` + its key (numbers as numbers)."""
    from myst_nb import glue as glue_
    for k, v in values.items():
        glue_(prefix + k, value(v), display=False)


def notes(*texts):
    """Display each non-empty Markdown text (no empty output on the page)."""
    from IPython.display import Markdown, display
    for text in texts:
        if text:
            display(Markdown(text))


def gaps(result):
    """The notes of a page's overrides and data-set gaps (`sources.Results`)."""
    notes(wording.overrides_note(result.overrides),
          *(wording.gap_note(wording.DATASET_LABELS[ds], reason) for ds, reason in result.gaps.items()))


def glue_table(name, frame):
    """Glue a table (a DataFrame) for another page's {glue} directive."""
    from myst_nb import glue as glue_
    glue_(name, frame, display=False)

