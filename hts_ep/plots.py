"""What the notebooks share for their figures and logs: one style, one colour per condition."""

COLORS = {"scalar": "0.25", "normal": "tab:blue", "lognormal": "tab:orange", "gamma": "tab:green"}


def style():
    """One figure style for the book."""
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
                         "font.size": 9, "legend.frameon": False})


def text_progress():
    """Plain-text progress bars (to stderr) instead of notebook widgets.

    papermill's log then shows the sweep's progress, and the book drops
    stderr, so no widget state or bar ends up in the pages.
    """
    import tqdm
    import tqdm.auto
    tqdm.auto.tqdm = tqdm.tqdm
