"""A score result (:func:`reliable_lalm.core.scoring.score_records`) as a readable plain-text table:
``rlalm score --format table``."""
from __future__ import annotations

from typing import Any, Mapping

from reliable_lalm.core.breakdowns import table_rows


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(result: Mapping[str, Any]) -> str:
    """A readable plain-text rendering of a :func:`score_records` result."""
    groups = [("total", result)] + list(result["by_task"].items())
    if result.get("by"):  # --by breakdowns: extra rows named key=group (task's are the rows above already)
        groups += table_rows({k: v for k, v in result["by"].items() if k != "task"})
    has_base = "ncc" in result
    head = ["group", "n", "correct", "rejected", "wrong", "invalid", "Acc%", "Tru%", "Rej%", "Rel%"]
    if has_base:
        head += ["ΔCon%", "ΔHum%", "RGI", "ΔCon%(N)", "ΔHum%(N)", "RGI(N)"]
    rows = [head]
    for name, g in groups:
        row = [name, str(g["n"]), str(g["n_correct"]), str(g["n_rejected"]), str(g["n_wrong"]), str(g["n_invalid"]),
               _pct(g["acc"]), _pct(g["tru"]), _pct(g["rej"]), _pct(g["rel"])]
        if has_base:
            row += [_pct(g["d_con"]), _pct(g["d_hum"]), _num(g["rgi"]),
                    _pct(g["d_con_subset"]), _pct(g["d_hum_subset"]), _num(g["rgi_subset"])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if has_base:
        lines.append("")
        lines.append("ΔCon/ΔHum/RGI: class convention (eqs. 8-9, divided by Nc and Nw); (N): subset convention "
                     "(divided by N = Nc + Nw, as the paper's Tables 2 and 11). RGI = log10(ΔHum/ΔCon).")
        lines.append("transitions (baseline -> method):")
        for name, g in groups:
            lines.append(f"  {name}: " + " ".join(f"{k}={g[k]}" for k in ("ncc", "ncr", "ncw", "nwc", "nwr", "nww",
                                                                           "nrc", "nrr", "nrw")))
        reasons = [(name, k, g[k + "_reason"]) for name, g in groups for k in
                   ("d_con", "d_hum", "rgi", "d_con_subset", "d_hum_subset", "rgi_subset") if g.get(k + "_reason")]
        if reasons:
            lines.append("undefined values:")
        for name, k, reason in reasons:
            lines.append(f"  {name}: {k} undefined: {reason}")
    if "ci" in result:
        lines.append("")
        lev = result.get("bootstrap", {})
        lines.append(f"bootstrap {100 * lev.get('level', 0.95):.0f}% intervals "
                     f"({lev.get('n_boot')} resamples, seed {lev.get('seed')}):")
        for name, g in groups:
            ci = g.get("ci", {})
            parts = []
            for k, v in ci.items():
                scale = _num if k.startswith("rgi") else _pct
                parts.append(f"{k} [{scale(v['low'])}, {scale(v['high'])}]")
            lines.append(f"  {name}: " + "; ".join(parts))
    norm = result.get("normalizer", {})
    lines.append("")
    lines.append(f"normalizer: {norm.get('name')}; kinds {norm.get('kinds')}")
    disagree = norm.get("disagreements")
    if disagree:
        lines.append(f"LLM judge and rules disagree on {disagree['n_disagree']} of {disagree['n_compared']} output(s) "
                     "both decided (--log-samples lists them)")
    failed = norm.get("failed_items") or []
    if failed:
        lines.append(f"LLM normalization failed for {len(failed)} item(s) (rule-based result kept): "
                     + ", ".join(f"{f['id']}" + (" (baseline)" if f["source"] == "baseline" else "") for f in failed[:20])
                     + (" ..." if len(failed) > 20 else ""))
    if result.get("missing", {}).get("n"):
        lines.append(f"missing from the store: {result['missing']['n']} benchmark item(s)")
    rejected = result.get("rejected", {})
    if rejected.get("n"):
        lines.append(f"{rejected['n']} benchmark record(s) rejected at load time (no result):")
        for r in rejected["records"][:50]:
            where = f"line {r['line']}" if r.get("line") else f"index {r['index']}"
            lines.append(f"  {r['id']} ({where}): {r['reason']}")
    if result["errors"]:
        lines.append(f"{len(result['errors'])} record error(s):")
        for e in result["errors"][:50]:
            lines.append(f"  [{e['source']}] {e['id']}: {e['reason']}")
        if len(result["errors"]) > 50:
            lines.append(f"  ... {len(result['errors']) - 50} more (see --format json)")
    return "\n".join(lines)
