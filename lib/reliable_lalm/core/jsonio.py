"""Reading JSON that users hand in (benchmarks, predictions, few-shot files, checkpoint configs).

One rule for every reader: a UTF-8 byte-order mark is accepted (editors on Windows write one), and
a document nested deeper than the parser can follow (``RecursionError``) is a one-line
``ValueError`` naming the file, not a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOM = "\ufeff"


def loads(text: str | bytes, where: str | Path) -> Any:
    """``json.loads`` with a leading BOM dropped; ``ValueError`` naming ``where`` for text that is not
    JSON or is nested too deeply."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text[1:] if text.startswith(BOM) else text)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def load_file(path: str | Path) -> Any:
    """:func:`loads` of a UTF-8 file."""
    return loads(Path(path).read_bytes(), path)
