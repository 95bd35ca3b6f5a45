"""``rlalm report``: the per-item HTML report, read back with an HTML parser (every item present,
audio paths resolve, filter data right) and once in headless Chromium where it is installed."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from reliable_lalm.cli import main
from reliable_lalm.core.results import ResultStore
from reliable_lalm.reporting.item_report import build_item_report, describe_rule, render_html

CHOICES = ["rain", "engine", "knock", "bell"]
# id -> (task, answer, baseline output, method output); the expected outcomes follow by hand.
ITEMS = {
    "s1": ("sound", "rain", "rain", "rain"),                       # correct -> correct
    "s2": ("sound", "bell", "engine", "IDK"),                      # wrong -> rejected
    "m1": ("music", "knock", "knock", "I don't know."),            # correct -> rejected
    "m2": ("music", "engine", "bell", "The answer is B."),         # wrong -> correct (letter rule)
    "p1": ("speech", "bell", "rain", "rain or knock"),             # wrong -> wrong (invalid: no rule decides)
    "p2": ("speech", "rain", "rain", None),                        # correct -> error (generation failed)
}
EXPECTED = {"s1": ("correct", "correct"), "s2": ("wrong", "rejected"), "m1": ("correct", "rejected"),
            "m2": ("wrong", "correct"), "p1": ("wrong", "wrong"), "p2": ("correct", "error")}


def _store(folder: Path, method: str, outputs: dict[str, str | None], samples: dict[str, list[str]] | None = None) -> Path:
    store = ResultStore.open(folder, {"method": method})
    records = []
    for item_id, (task, answer, *_rest) in ITEMS.items():
        output = outputs[item_id]
        records.append({"item_id": item_id, "sample_index": 0, "method": method, "task": task, "answer": answer,
                        "question": f"What is heard in {item_id}?", "choices": CHOICES, "model_output": output,
                        "error": None if output is not None else "generation failed: out of memory",
                        "warning": None})
        for k, text in enumerate((samples or {}).get(item_id, []), start=1):
            records.append({**records[-1 - (k - 1)], "sample_index": k, "model_output": text, "error": None})
    store.extend(records)
    return folder


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    audio = tmp_path / "bench" / "audio"
    audio.mkdir(parents=True)
    records = []
    for n, (item_id, (task, answer, _, _)) in enumerate(ITEMS.items()):
        t = np.arange(8000) / 16000.0
        sf.write(audio / f"{item_id} clip.wav", (0.2 * np.sin(2 * np.pi * (300 + 50 * n) * t)).astype(np.float32), 16000)
        records.append({"id": item_id, "audio_id": f"./audio/{item_id} clip.wav", "question": f"What is heard in {item_id}?",
                        "choices": CHOICES, "answer": answer, "task": task,
                        "difficulty": "easy" if n % 2 else "hard", "category": "Perception"})
    (tmp_path / "bench" / "bench.json").write_text(json.dumps(records))
    _store(tmp_path / "baseline", "baseline", {i: v[2] for i, v in ITEMS.items()})
    _store(tmp_path / "idk", "idk", {i: v[3] for i, v in ITEMS.items()})
    return tmp_path


class ReportParser(HTMLParser):
    """Articles (with their data-*), audio sources, filter options and table cells of a report."""

    def __init__(self):
        super().__init__()
        self.articles: list[dict[str, str]] = []
        self.audio: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self.rows: list[list[str]] = []
        self._select: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._option: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.articles.append(a)
        elif tag == "audio" and self.articles:
            self.audio[self.articles[-1]["data-id"]] = a["src"]
        elif tag == "select":
            self._select = a["data-filter"]
            self.options[self._select] = []
        elif tag == "option":
            self._option = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "option" and self._option is not None:
            self.options[self._select].append("".join(self._option))
            self._option = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._option is not None:
            self._option.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_report_lists_every_item_with_resolving_audio_and_right_filter_data(run_dir, capsys):
    out = run_dir / "out" / "report.html"
    rc = main(["report", str(run_dir / "idk"), "--baseline", str(run_dir / "baseline"),
               "--benchmark", str(run_dir / "bench" / "bench.json"), "--out", str(out)])
    assert rc == 0
    assert "6 items (1 with an error), 6 with audio" in capsys.readouterr().err
    page = _parse(out)
    assert sorted(a["data-id"] for a in page.articles) == sorted(ITEMS)
    # benchmark order, not the store's write order
    assert [a["data-id"] for a in page.articles] == list(ITEMS)
    for a in page.articles:
        base, method = EXPECTED[a["data-id"]]
        assert a["data-outcome"] == method, a
        assert a["data-transition"] == f"{base} → {method}", a
        assert a["data-modality"] == ITEMS[a["data-id"]][0]
        assert a["data-error"] == ("yes" if method == "error" else "no")
    # every clip is linked relative to the report and resolves to the benchmark's file
    assert set(page.audio) == set(ITEMS)
    for item_id, src in page.audio.items():
        assert not src.startswith(("/", "file:", "http")), src
        assert (out.parent / unquote(src)).resolve() == (run_dir / "bench" / "audio" / f"{item_id} clip.wav").resolve()
    # the filters offer the values present, with their counts
    assert "rejected (2)" in page.options["outcome"] and "error (1)" in page.options["outcome"]
    assert "wrong → rejected (1)" in page.options["transition"]
    assert not any(o.startswith("rejected → ") for o in page.options["transition"])  # absent: not offered
    assert page.options["modality"] == ["all", "sound (2)", "music (2)", "speech (2)"]
    assert page.options["error"] == ["all", "yes (1)", "no (5)"]
    # summary at the top: 5 scored items (the error is left out), 2 correct, 2 rejected, 1 wrong (hedge)
    total = next(r for r in page.rows if r and r[0] == "total")
    assert total[1:6] == ["5", "2", "2", "1", "1"]
    assert total[6] == "40.00"  # Acc % with 2 decimals
    transitions = {r[0]: r[1:] for r in page.rows if r and r[0].startswith("baseline ")}
    assert transitions["baseline correct"] == ["1", "1", "0"]  # p2 (error) is in no cell
    assert transitions["baseline wrong"] == ["1", "1", "1"]
    assert any(r[0] == "hard" for r in page.rows)  # breakdown by difficulty
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert "generation failed: out of memory" in text
    assert "no option, letter or refusal could be found" in text  # why p1 is wrong


def test_report_embeds_audio_and_filters_in_python(run_dir, tmp_path):
    bench = str(run_dir / "bench" / "bench.json")
    report = build_item_report(run_dir / "idk", baseline=run_dir / "baseline", benchmark=bench)
    html_text = render_html(report, tmp_path, audio="embed")
    srcs = re.findall(r'<audio controls preload="none" src="data:audio/x-wav;base64,([^"]+)"|'
                      r'<audio controls preload="none" src="data:audio/wav;base64,([^"]+)"', html_text)
    assert len(srcs) == len(ITEMS)
    first = next(s for pair in srcs for s in pair if s)
    assert base64.b64decode(first) == (run_dir / "bench" / "audio" / "s1 clip.wav").read_bytes()
    assert [it.id for it in report.filter(transition="wrong → rejected")] == ["s2"]
    assert [it.id for it in report.filter(error=True)] == ["p2"]
    assert {it.id for it in report.filter(task="music")} == {"m1", "m2"}
    m2 = next(it for it in report.items if it.id == "m2")
    assert m2.method.label == "engine" and "letter" in m2.method.why
    # a judge's own reasons replace the rule's description, for those outputs only
    judged = build_item_report(run_dir / "idk", benchmark=bench, reasons={("s2", "method"): "the judge said IDK"})
    reasons = {it.id: it.method.why for it in judged.items}
    assert reasons["s2"] == "the judge said IDK" and "exactly one option" in reasons["s1"]


def test_report_shows_k_at_n_samples(tmp_path):
    _store(tmp_path / "k_at_n", "baseline", {i: v[2] for i, v in ITEMS.items()},
           samples={"s1": ["engine", "IDK"], "s2": ["bell", "bell"]})
    report = build_item_report(tmp_path / "k_at_n")
    s1 = next(it for it in report.items if it.id == "s1")
    assert [s.outcome for s in s1.samples] == ["correct", "wrong", "rejected"]
    html_text = render_html(report, tmp_path)
    assert "K@N: 3 samples, 1 correct" in html_text
    assert "no audio (pass the benchmark to link the clips)" in html_text


def test_report_refuses_what_is_not_a_store(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a result store" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_describe_rule_names_the_scope():
    assert describe_rule("answer_statement:letter").startswith("an option letter")
    assert "in the answer statement" in describe_rule("answer_statement:letter")
    assert describe_rule("something-new") == "something-new"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The probe (added to a copy of the report, never to the product) loads the first clip's metadata,
# picks outcome=rejected in the page's own filter and writes what it saw into the title.
PROBE = """<script>
var a = document.querySelector('audio'); a.preload = 'metadata';
a.addEventListener('loadedmetadata', function(){
  var s = document.getElementById('filter-outcome'); s.value = 'rejected'; s.dispatchEvent(new Event('change'));
  document.title = 'probe duration=' + a.duration.toFixed(2) + ' shown=' + document.getElementById('shown').textContent
    + ' visible=' + document.querySelectorAll('article.item:not([hidden])').length;
});
a.addEventListener('error', function(){ document.title = 'probe audio error'; });
a.load();
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_in_headless_chromium(run_dir):
    out = run_dir / "out" / "report.html"
    assert main(["report", str(run_dir / "idk"), "--baseline", str(run_dir / "baseline"),
                 "--benchmark", str(run_dir / "bench" / "bench.json"), "--out", str(out)]) == 0
    probe = out.with_name("probe.html")
    probe.write_text(out.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert re.fullmatch(r"probe duration=0\.50 shown=2 visible=2", title), title  # 8000 samples at 16 kHz
    shot = out.with_name("report.png")
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
