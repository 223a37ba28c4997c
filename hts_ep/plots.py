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


def publish(fig, name, legend_from=None, top=None):
    """Lay out `fig`, glue it under `name` for the page's {glue:figure}, and close it.

    `legend_from`: an axes whose handles make one legend for the whole figure, above `top`
    (the fraction of the height left to the panels)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue
    if legend_from is not None:
        handles, labels = legend_from.get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.0), fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 1, top) if top else None)
    glue(name, fig, display=False)
    plt.close(fig)

