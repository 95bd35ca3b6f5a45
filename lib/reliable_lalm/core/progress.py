"""One progress bar for every long loop: a widget in an interactive notebook, plain text elsewhere.

In a notebook executed headlessly (papermill, ``rlalm reproduce``) a tqdm *widget* is saved as its
first frame ("0%"), so a finished run looked frozen. There, and whenever ``RLALM_PROGRESS=text``,
bars are plain text on stderr that update at most every :data:`TEXT_MININTERVAL` seconds, so the
saved notebook shows where each loop ended. ``RLALM_PROGRESS=off`` hides them.
"""
from __future__ import annotations

import os
from typing import Any

ENV = "RLALM_PROGRESS"  # "auto" (default), "text" or "off"
TEXT_MININTERVAL = 5.0


def use_text_bars() -> None:
    """Switch this process (and kernels it starts) to plain-text bars (headless notebook runs)."""
    os.environ[ENV] = "text"


def progress_bar(iterable: Any = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, **kwargs: Any):
    mode = os.environ.get(ENV, "auto").lower()
    if mode == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        kwargs.pop("dynamic_ncols", None)
        kwargs.setdefault("ncols", 100)
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=(not enabled) or mode == "off", **kwargs)
