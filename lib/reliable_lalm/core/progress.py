"""One progress bar for every long loop: plain text that renders the same in a terminal, under
papermill and in JupyterLab; a widget only when asked for.

A tqdm *widget* in a notebook executed headlessly (plain ``papermill``, ``rlalm reproduce``) is
saved as its first frame ("0%"), so a finished run looked frozen, and a kernel cannot tell
whether a person is watching. So in a kernel the bars are plain text on stderr (JupyterLab draws
their carriage returns in place) that update at most every :data:`TEXT_MININTERVAL` seconds, so
the saved notebook shows where each loop ended. ``RLALM_PROGRESS=widget`` gives tqdm's widgets
back for interactive work, ``RLALM_PROGRESS=text`` forces text bars, ``RLALM_PROGRESS=off`` hides
them. :func:`quiet_library_bars` does the same for transformers' own bars (its "Loading weights"
bar is a widget in a kernel).
"""
from __future__ import annotations

import os
import sys
from typing import Any

ENV = "RLALM_PROGRESS"  # "auto" (default: text; in a kernel with a slow refresh), "text", "widget" or "off"
TEXT_MININTERVAL = 5.0


def use_text_bars() -> None:
    """Switch this process (and kernels it starts) to plain-text bars (headless notebook runs)."""
    os.environ[ENV] = "text"


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm.auto would draw a widget)."""
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and getattr(shell, "kernel", None) is not None


def mode() -> str:
    return os.environ.get(ENV, "auto").lower()


def progress_bar(iterable: Any = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, **kwargs: Any):
    chosen = mode()
    if chosen == "widget":
        # local import: which tqdm depends on where it runs (tqdm.auto loads the notebook widgets)
        from tqdm.auto import tqdm
    else:
        # local import: which tqdm depends on where it runs (tqdm.auto loads the notebook widgets)
        from tqdm.std import tqdm

        if chosen == "text" or in_kernel():
            kwargs.setdefault("mininterval", TEXT_MININTERVAL)
            kwargs.pop("dynamic_ncols", None)
            kwargs.setdefault("ncols", 100)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=(not enabled) or chosen == "off", **kwargs)
