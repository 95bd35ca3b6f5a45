"""The per-item report of a run: every item with its clip, question, choices, answer, raw output, the
judge's decision and why, its outcome and the baseline -> method transition (``rlalm report``).

:func:`build_item_report` joins a result store (and optionally the baseline store on the same items
and the benchmark, which gives the audio paths) and judges every output with the run's normalizer;
:func:`render_html` writes it as one self-contained HTML file (inline CSS and JS, no network, no
server) with filters by outcome, transition, modality and error, and the run's summary, transition
and breakdown tables at the top; :func:`show_items` shows a handful of items inline in a notebook
with an audio player.

*Why* an output was judged as it was: by default the normalizer's rule, in words
(:func:`describe_rule`). A judge that logs its own reasons per item passes them as ``reasons``:
a mapping ``(item id, side) -> text`` (side ``"method"``, ``"baseline"`` or ``"sample N"``), which
replaces the rule's description for those outputs only.
"""
from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.breakdowns import KEYS as BREAKDOWN_KEYS
from reliable_lalm.core.breakdowns import field_value
from reliable_lalm.core.metrics import OUTCOMES, outcome_of
from reliable_lalm.core.normalize import RULE_DESCRIPTIONS, SCOPE_DESCRIPTIONS
from reliable_lalm.core.normalize_types import Normalized, Normalizer
from reliable_lalm.core.results import ResultStore
from reliable_lalm.benchmarks.registry import parse_benchmark, resolve_benchmark
from reliable_lalm.core.records import join_items, records_from_store, task_order
from reliable_lalm.core.scoring import score_records
from reliable_lalm.methods.llm_judge import resolve_normalizer
from reliable_lalm.reporting.tables import format_number

ERROR = "error"  # the outcome of an item whose record could not be scored (generation failed, bad record)
ARROW = " → "
AUDIO_MODES = ("link", "embed", "none")

def describe_rule(rule: str) -> str:
    """The default *why* of a decision: the normalizer's rule name in words, the name kept
    (``"answer_statement:letter"`` -> ``"an option letter (...), in the answer statement [answer_statement:letter]"``)."""
    scope, _, name = rule.rpartition(":")
    text = RULE_DESCRIPTIONS.get(name) or RULE_DESCRIPTIONS.get(name.split("-", 1)[0])
    if text is None:
        return rule or "no rule recorded"
    where = f", {SCOPE_DESCRIPTIONS.get(scope, scope)}" if scope else ""
    return f"{text}{where} [{rule}]"


@dataclass
class Judgement:
    """One output as the judge saw it."""

    output: str | None
    kind: str  # choice | idk | invalid | error
    label: str  # the option text, "IDK", or "" when nothing was mapped
    rule: str  # the normalizer's rule ("" for an error)
    why: str
    outcome: str  # correct | rejected | wrong | error


@dataclass
class ReportItem:
    id: str
    task: str
    question: str
    choices: tuple[str, ...]
    answer: str
    audio_path: str | None  # absolute path from the benchmark (None without one)
    method: Judgement
    baseline: Judgement | None = None
    samples: list[Judgement] = field(default_factory=list)  # K@N samples (sample index 0 included) when present
    error: str | None = None
    warning: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # difficulty, category, sub-category

    @property
    def transition(self) -> str | None:
        """``"wrong → rejected"``: the baseline's outcome, then the method's (None without a baseline)."""
        return None if self.baseline is None else f"{self.baseline.outcome}{ARROW}{self.method.outcome}"


@dataclass
class ItemReport:
    store: str
    method: str
    items: list[ReportItem]
    summary: dict[str, Any]  # score_records' result (total, by_task, by, transitions with a baseline)
    baseline_store: str | None = None
    baseline_method: str | None = None
    benchmark: str | None = None
    normalizer: str = "rule"
    modalities: tuple[str, ...] = ()

    def filter(self, *, outcome: str | None = None, transition: str | None = None, task: str | None = None,
               error: bool | None = None) -> list[ReportItem]:
        """The items matching every filter given (the HTML filters, in Python)."""
        return [it for it in self.items
                if (outcome is None or it.method.outcome == outcome)
                and (transition is None or it.transition == transition)
                and (task is None or it.task == task)
                and (error is None or (it.error is not None) == error)]


def _store_method(store: ResultStore, records: Sequence[Mapping[str, Any]]) -> str:
    method = next((str(r["method"]) for r in records if r.get("method")), None)
    if method is None and store.manifest_path.is_file():
        method = (store.manifest().get("params") or {}).get("method")
    return str(method or store.directory.name)


def _judge(outputs: Sequence[str | None], choices: Sequence[Sequence[str]], normalizer: Normalizer
           ) -> list[Normalized | None]:
    """Normalized outputs (None where there is no output), in one call (an LLM judge batches it)."""
    todo = [i for i, o in enumerate(outputs) if isinstance(o, str)]
    done = normalizer.normalize_many([outputs[i] for i in todo], [list(choices[i]) for i in todo]) if todo else []
    out: list[Normalized | None] = [None] * len(outputs)
    for i, x in zip(todo, done):
        out[i] = x
    return out


def _judgement(output: str | None, normalized: Normalized | None, answer: str, why: str | None,
               error: str | None = None) -> Judgement:
    if normalized is None:
        return Judgement(output, "error", "", "", why or error or "no output", ERROR)
    return Judgement(output, normalized.kind, normalized.label, normalized.method,
                     why or describe_rule(normalized.method), outcome_of(normalized, answer))


def build_item_report(store: str | Path, *, baseline: str | Path | None = None, benchmark: Any = None,
                      normalizer: Normalizer | str | None = None,
                      reasons: Mapping[tuple[str, str], str] | None = None,
                      by: Sequence[str] | None = None) -> ItemReport:
    """Every item of ``store`` judged, with its baseline (``baseline``: a store of the same items).

    ``benchmark``: a spec (``synthetic``, ``mmar:FILE``, a JSON file) or a loaded benchmark; it gives
    the audio paths and the item fields (without it, the store's own question/choices/answer). The
    summary is :func:`~reliable_lalm.core.scoring.score_records` on the same records, with
    breakdowns ``by`` (default: every key of :data:`~reliable_lalm.core.breakdowns.KEYS` other than
    task that has more than one value). ``reasons``: see the module docstring.
    """
    reasons = reasons or {}
    norm = resolve_normalizer(normalizer)
    bench_items, _ = join_items(resolve_benchmark(benchmark))
    join = list(bench_items.values()) if bench_items is not None else None
    modalities: tuple[str, ...] = tuple(getattr(benchmark, "modalities", ()) or ())
    if isinstance(benchmark, (str, Path)):
        modalities = tuple(parse_benchmark(str(benchmark))[0].modalities)
    pred = records_from_store(store, join)
    base = records_from_store(baseline, join) if baseline is not None else None
    raw = ResultStore(Path(store))
    raw_records = raw.records()
    samples_by_item: dict[str, list[dict[str, Any]]] = {}
    for r in raw_records:
        samples_by_item.setdefault(str(r["item_id"]), []).append(r)
    first = {i: next((r for r in recs if int(r.get("sample_index", 0)) == 0), recs[0])
             for i, recs in samples_by_item.items()}
    if by is None:
        by = [k for k in BREAKDOWN_KEYS if k != "task"
              and len({field_value(r, k) for r in pred if isinstance(r, dict)}) > 1]
    if not modalities:
        modalities = task_order([str(r.get("task", "")) for r in pred if r.get("task")])
    summary = score_records(pred, base, norm, keep_items=True, by=list(by) or None, modalities=modalities)
    scored = {e["id"]: e for e in summary["items"]}
    record_errors: dict[str, str] = {}
    for e in summary["errors"]:
        record_errors.setdefault(str(e["id"]), f"[{e['source']}] {e['reason']}")

    # Outputs the scorer left out (errors) and the baseline's are judged here, in one call each.
    base_by_id = {str(r["id"]): r for r in base} if base is not None else {}
    pred_by_task = {str(r["id"]): r.get("task") for r in pred}
    # Benchmark order (its modalities first), else the modalities' order and the ids: not write order.
    position = {item_id: n for n, item_id in enumerate(bench_items or {})}
    rank = {m: n for n, m in enumerate(modalities)}
    ids = sorted((str(r["id"]) for r in pred),
                 key=lambda i: (position.get(i, len(position)), rank.get(str(pred_by_task.get(i)), len(rank)), i))
    pred_by_id = {str(r["id"]): r for r in pred}
    choices_of = {i: tuple(str(c) for c in (pred_by_id[i].get("choices") or first.get(i, {}).get("choices") or ()))
                  for i in ids}
    pred_norm = _judge([pred_by_id[i].get("model_output") for i in ids], [choices_of[i] for i in ids], norm)
    base_norm = (_judge([base_by_id.get(i, {}).get("model_output") for i in ids], [choices_of[i] for i in ids], norm)
                 if base is not None else [None] * len(ids))
    multi = {i: sorted(recs, key=lambda r: int(r.get("sample_index", 0))) for i, recs in samples_by_item.items()
             if len(recs) > 1}
    sample_keys = [(i, r) for i in ids for r in multi.get(i, [])]
    sample_norm = _judge([r.get("model_output") for _, r in sample_keys], [choices_of[i] for i, _ in sample_keys], norm)
    samples: dict[str, list[Judgement]] = {}
    for (i, r), x in zip(sample_keys, sample_norm):
        answer = str(pred_by_id[i].get("answer") or "")
        side = f"sample {int(r.get('sample_index', 0))}"
        samples.setdefault(i, []).append(_judgement(r.get("model_output"), x, answer, reasons.get((i, side)),
                                                    r.get("error")))

    items: list[ReportItem] = []
    for k, item_id in enumerate(ids):
        rec, stored = pred_by_id[item_id], first.get(item_id, {})
        bench_item = bench_items.get(item_id) if bench_items is not None else None
        answer = str(rec.get("answer") if rec.get("answer") is not None else stored.get("answer") or "")
        error = stored.get("error") or rec.get("error") or (record_errors.get(item_id) if item_id not in scored else None)
        method = _judgement(rec.get("model_output"), pred_norm[k], answer, reasons.get((item_id, "method")), error)
        if item_id not in scored and method.outcome != ERROR:
            method.outcome = ERROR  # the scorer left it out: it counts nowhere
        baseline_judgement = None
        if base is not None:
            b = base_by_id.get(item_id, {})
            baseline_judgement = _judgement(b.get("model_output"), base_norm[k], answer,
                                            reasons.get((item_id, "baseline")), b.get("error"))
        items.append(ReportItem(
            id=item_id, task=str(rec.get("task") or stored.get("task") or ""),
            question=str(rec.get("question") or stored.get("question") or ""), choices=choices_of[item_id],
            answer=answer, audio_path=bench_item.audio_path if bench_item is not None else None,
            method=method, baseline=baseline_judgement, samples=samples.get(item_id, []),
            error=str(error) if error else None, warning=stored.get("warning"),
            fields={key: field_value(rec, key) for key in BREAKDOWN_KEYS if key != "task"}))
    baseline_method = None
    if baseline is not None:
        base_store = ResultStore(Path(baseline))
        baseline_method = _store_method(base_store, base_store.records())
    return ItemReport(store=str(store), method=_store_method(raw, raw_records), items=items, summary=summary,
                      baseline_store=str(baseline) if baseline is not None else None,
                      baseline_method=baseline_method,
                      benchmark=str(benchmark) if isinstance(benchmark, (str, Path)) else None,
                      normalizer=getattr(norm, "name", str(normalizer)), modalities=tuple(modalities))


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------

def audio_source(path: str | None, mode: str, out_dir: Path) -> str | None:
    """What an ``<audio src>`` gets: a path relative to the report's folder (``link``), a base64
    data URI (``embed``), or None (``none``, or no such file)."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"audio mode {mode!r} is not one of {AUDIO_MODES}")
    if mode == "none" or not path or not Path(path).is_file():
        return None
    if mode == "embed":
        mime = mimetypes.guess_type(path)[0] or "audio/wav"
        return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return quote(os.path.relpath(Path(path).resolve(), out_dir.resolve()).replace(os.sep, "/"))


def _pct(value: Any) -> str:
    return format_number(None if value is None else 100 * value, 2)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], caption: str, css: str = "") -> str:
    out = [f'<table class="{css}"><caption>{_esc(caption)}</caption><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def summary_rows(report: ItemReport, groups: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Head and rows (paper units: %, 2 decimals; RGI 2 decimals) of a summary table."""
    has_base = report.baseline_store is not None
    head = ["group", "n", "correct", "rejected", "wrong", "invalid", "Acc %", "Tru %", "Rej %", "Rel %"]
    if has_base:
        head += ["ΔCon %", "ΔHum %", "RGI", "ΔCon % (class)", "ΔHum % (class)", "RGI (class)"]
    rows = []
    for name, g in groups:
        row = [name, str(g["n"]), str(g["n_correct"]), str(g["n_rejected"]), str(g["n_wrong"]), str(g["n_invalid"]),
               _pct(g["acc"]), _pct(g["tru"]), _pct(g["rej"]), _pct(g["rel"])]
        if has_base:
            row += [_pct(g.get("d_con_subset")), _pct(g.get("d_hum_subset")), format_number(g.get("rgi_subset")),
                    _pct(g.get("d_con")), _pct(g.get("d_hum")), format_number(g.get("rgi"))]
        rows.append(row)
    return head, rows


def _summary_html(report: ItemReport) -> str:
    s = report.summary
    parts = []
    head, rows = summary_rows(report, [("total", s), *s["by_task"].items()])
    parts.append(_table(head, rows, "Summary: Acc, Tru, Rej, Rel in %"
                        + ("; ΔCon, ΔHum, RGI against the baseline (subset convention, as the paper's Table 2; "
                           "class: equations 8-9). Higher Rel and RGI are better." if report.baseline_store else
                           ". Higher Rel is better."), "summary"))
    if report.baseline_store:
        codes = {"correct": "c", "rejected": "r", "wrong": "w"}
        matrix = [[f"baseline {b}"] + [str(s[f"n{codes[b]}{codes[m]}"]) for m in OUTCOMES] for b in OUTCOMES]
        parts.append(_table(["", *[f"method {m}" for m in OUTCOMES]], matrix,
                            "Transitions baseline → method (counts): a good method turns wrong answers into "
                            "refusals (wrong → rejected) and keeps the correct ones.", "transitions"))
    for key, groups in (s.get("by") or {}).items():
        head, rows = summary_rows(report, list(groups.items()))
        head[0] = key
        parts.append(_table(head, rows, f"By {key}", "breakdown"))
    kinds = Counter(it.method.kind for it in report.items)
    rules = Counter(it.method.rule or "(error)" for it in report.items)
    parts.append(_table(["rule", "items", "what it means"],
                        [[r, str(n), describe_rule(r) if r != "(error)" else "no output to judge"]
                         for r, n in rules.most_common()],
                        f"How the judge ({report.normalizer}) decided the method's outputs: "
                        + ", ".join(f"{k} {n}" for k, n in kinds.most_common()), "rules"))
    return "\n".join(parts)


def _judgement_html(j: Judgement, title: str) -> str:
    output = "<em>no output</em>" if j.output is None else f"<pre>{_esc(j.output)}</pre>"
    label = j.label if j.label else ("(nothing mapped)" if j.kind != "error" else "-")
    return (f'<div class="judgement {j.outcome}"><h4>{_esc(title)}: <span class="outcome">{_esc(j.outcome)}</span></h4>'
            f"{output}<p>decision: <b>{_esc(j.kind)}</b> {_esc(label)}</p>"
            f'<p class="why">why: {_esc(j.why)}</p></div>')


def _audio_html(it: ReportItem, src: str | None) -> str:
    if src is not None:
        return f'<audio controls preload="none" src="{_esc(src)}"></audio>'
    if it.audio_path:
        return f'<p class="noaudio">audio not shown: {_esc(it.audio_path)}</p>'
    return '<p class="noaudio">no audio (pass the benchmark to link the clips)</p>'


def _item_html(it: ReportItem, audio: str, report: ItemReport) -> str:
    choices = "".join(f'<li class="{"answer" if c == it.answer else ""}">{_esc(c)}</li>' for c in it.choices)
    fields = ", ".join(f"{k}: {v}" for k, v in it.fields.items() if v and v != "(none)")
    parts = [f'<article class="item" id="item-{_esc(it.id)}" data-id="{_esc(it.id)}" data-outcome="{_esc(it.method.outcome)}" '
             f'data-transition="{_esc(it.transition or "")}" data-modality="{_esc(it.task)}" '
             f'data-error="{"yes" if it.error else "no"}">',
             f'<header><h3>{_esc(it.id)}</h3><span class="tag">{_esc(it.task)}</span>'
             f'<span class="tag {it.method.outcome}">{_esc(it.method.outcome)}</span>'
             + (f'<span class="tag transition">{_esc(it.transition)}</span>' if it.transition else "")
             + (f'<span class="meta">{_esc(fields)}</span>' if fields else "") + "</header>",
             audio, f'<p class="question">{_esc(it.question)}</p><ol class="choices">{choices}</ol>',
             f'<p>answer: <b>{_esc(it.answer)}</b></p>']
    if it.error:
        parts.append(f'<p class="error">error: {_esc(it.error)}</p>')
    if it.warning:
        parts.append(f'<p class="warning">warning: {_esc(it.warning)}</p>')
    parts.append('<div class="sides">' + _judgement_html(it.method, report.method)
                 + (_judgement_html(it.baseline, f"baseline ({report.baseline_method})") if it.baseline else "")
                 + "</div>")
    if it.samples:
        rows = "".join(f'<tr class="{s.outcome}"><td>{n}</td><td>{_esc(s.output)}</td><td>{_esc(s.label or s.kind)}</td>'
                       f"<td>{_esc(s.outcome)}</td><td>{_esc(s.why)}</td></tr>" for n, s in enumerate(it.samples))
        parts.append(f'<details class="samples"><summary>K@N: {len(it.samples)} samples, '
                     f'{sum(s.outcome == "correct" for s in it.samples)} correct</summary><table><thead><tr>'
                     f"<th>sample</th><th>output</th><th>decision</th><th>outcome</th><th>why</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table></details>")
    parts.append("</article>")
    return "\n".join(parts)


def _select(name: str, label: str, values: Sequence[str], counts: Counter) -> str:
    options = ['<option value="">all</option>'] + [f'<option value="{_esc(v)}">{_esc(v)} ({counts[v]})</option>'
                                                     for v in values]
    return f'<label>{_esc(label)} <select id="filter-{name}" data-filter="{name}">{"".join(options)}</select></label>'


# The page's own rules; ITEM_CSS is scoped to the item cards (a notebook shows cards only).
PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}caption{text-align:left;font-weight:600;padding:.3em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}
table.rules td:last-child,.samples td{text-align:left}
#filters{position:sticky;top:0;background:#f6f6f6;padding:.6em;border:1px solid #ddd;z-index:1}
#filters label{margin-right:1em}
"""
ITEM_CSS = """
.item{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.item h3{margin:0;font-size:1em}.item h4{margin:.2em 0;font-size:.9em}
.item header{display:flex;gap:.6em;align-items:center;flex-wrap:wrap}
.tag{font-size:.8em;padding:.1em .5em;border-radius:4px;background:#eee}
.meta{font-size:.8em;color:#666}
.item .correct{background:#e3f5e1}.item .rejected{background:#fff4d6}.item .wrong{background:#fbe1e1}
.item .error{background:#e8e8ff}
.item .sides{display:flex;gap:1em;flex-wrap:wrap}.item .judgement{flex:1;min-width:280px;padding:.3em .6em;border-radius:4px}
.item pre{white-space:pre-wrap;margin:.2em 0;font-size:.85em}.item .why{font-size:.85em;color:#444}
.item .choices li.answer{font-weight:600}.item .noaudio{color:#a00;font-size:.85em}
.item audio{width:320px;height:32px}
"""

JS = """
(function(){
  var selects = document.querySelectorAll('#filters select');
  var items = document.querySelectorAll('article.item');
  function apply(){
    var want = {};
    selects.forEach(function(s){ if(s.value){ want[s.dataset.filter] = s.value; } });
    var shown = 0;
    items.forEach(function(el){
      var ok = true;
      for (var k in want){ if (el.dataset[k] !== want[k]) { ok = false; } }
      el.hidden = !ok; if (ok) { shown++; }
    });
    document.getElementById('shown').textContent = shown;
  }
  selects.forEach(function(s){ s.addEventListener('change', apply); });
  apply();
})();
"""


def render_html(report: ItemReport, out_dir: str | Path, *, audio: str = "link", title: str | None = None) -> str:
    """The report as one HTML document; audio ``link``ed relative to ``out_dir``, ``embed``ded, or ``none``."""
    out_dir = Path(out_dir)
    title = title or f"{report.method} on {report.benchmark or Path(report.store).name}"
    items = report.items
    heading = [f"<h1>{_esc(title)}</h1>",
               f"<p>store: <code>{_esc(report.store)}</code>"
               + (f"<br>baseline ({_esc(report.baseline_method)}): <code>{_esc(report.baseline_store)}</code>"
                  if report.baseline_store else "")
               + (f"<br>benchmark: <code>{_esc(report.benchmark)}</code>" if report.benchmark else "")
               + f"<br>{len(items)} items; judge: {_esc(report.normalizer)}</p>"]
    outcomes = [o for o in (*OUTCOMES, ERROR)]
    filters = [_select("outcome", "outcome", outcomes, Counter(it.method.outcome for it in items))]
    if report.baseline_store:
        transitions = [f"{b}{ARROW}{m}" for b in (*OUTCOMES, ERROR) for m in (*OUTCOMES, ERROR)]
        present = Counter(it.transition for it in items)
        filters.append(_select("transition", "baseline → method", [t for t in transitions if present[t]], present))
    tasks = list(dict.fromkeys([*[m for m in report.modalities if any(it.task == m for it in items)],
                                *[it.task for it in items]]))
    filters.append(_select("modality", "modality", tasks, Counter(it.task for it in items)))
    filters.append(_select("error", "error", ["yes", "no"], Counter("yes" if it.error else "no" for it in items)))
    body = [*heading, '<section id="summary">', _summary_html(report), "</section>",
            '<section id="filters">' + " ".join(filters) + ' <span><b id="shown">' + str(len(items))
            + f"</b> of {len(items)} items shown</span></section>", '<section id="items">']
    body += [_item_html(it, _audio_html(it, audio_source(it.audio_path, audio, out_dir)), report) for it in items]
    body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{PAGE_CSS}{ITEM_CSS}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{JS}</script>\n</body></html>\n")


def write_report(report: ItemReport, out: str | Path, *, audio: str = "link", title: str | None = None) -> Path:
    """Write :func:`render_html` to ``out`` (atomically); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_html(report, out.parent, audio=audio, title=title))
    return out


# ------------------------------------------------------------------------------------------------
# Notebooks
# ------------------------------------------------------------------------------------------------

def show_items(report: ItemReport, items: Sequence[ReportItem] | None = None, *, n: int = 5) -> None:
    """Show ``items`` (default: the first ``n`` of the report) inline in a notebook: the card of
    each item as in the HTML report, with an ``IPython.display.Audio`` player of its clip."""
    # local import: IPython exists only in notebooks; the library works without it
    from IPython.display import HTML, Audio, display

    chosen = list(items if items is not None else report.items)[:n]
    display(HTML(f"<style>{ITEM_CSS}</style>"))
    for it in chosen:
        playable = bool(it.audio_path) and Path(str(it.audio_path)).is_file()
        display(HTML(_item_html(it, "" if playable else _audio_html(it, None), report)))
        if playable:
            display(Audio(filename=it.audio_path))
