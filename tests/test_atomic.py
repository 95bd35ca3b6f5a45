"""The one atomic writer (core/atomic.py) every store, manifest, report and cache goes through."""
from __future__ import annotations

import json
import os

import pytest

from reliable_lalm.core import atomic
from reliable_lalm.core.atomic import atomic_write_json, atomic_write_text


def test_replaces_the_file_and_creates_the_folder(tmp_path):
    target = tmp_path / "a" / "b" / "report.json"
    atomic_write_json(target, {"x": "é", "n": 1})
    assert target.read_text(encoding="utf-8") == '{\n  "x": "é",\n  "n": 1\n}\n'
    atomic_write_json(target, {"b": 1, "a": 2}, indent=None, sort_keys=True)
    assert target.read_text(encoding="utf-8") == '{"a": 2, "b": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temporary file left


def test_manifest_bytes_are_as_json_dump_wrote_them(tmp_path):
    data = {"z": "ü", "a": [1, 2], "p": tmp_path}
    atomic_write_json(tmp_path / "m.json", data, sort_keys=True, ensure_ascii=True, default=str)
    assert (tmp_path / "m.json").read_text() == json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "records.jsonl"
    atomic_write_text(target, "old\n")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_permissions_are_those_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(tmp_path / "atomic.txt").st_mode == os.stat(plain).st_mode  # not mkstemp's 0600
