"""`--format table`: the human report, one row per finding, every finding (no cap)."""

from __future__ import annotations

from agent.events import Decided, Verdict
from agent.imagegate.report_common import cves, fixed

_COLS = ("ACTION", "SEVERITY", "CATEGORY", "ID", "PACKAGE", "INSTALLED", "FIXED", "PATH")


def _cell(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


def render(v: Verdict, shown: list[Decided], hidden: int, duration_ms: float) -> str:
    lines = [f"{v.image or '-'} {v.digest or ''}".rstrip(), f"verdict: {v.verdict.upper()}: {v.reason}"]
    by_sev: dict[str, int] = {}
    for d in shown:
        by_sev[d.finding.severity.label] = by_sev.get(d.finding.severity.label, 0) + 1
    lines.append(f"findings: {len(shown)}" + (" (" + ", ".join(f"{k}: {n}" for k, n in sorted(by_sev.items())) + ")"
                                              if by_sev else ""))
    if shown:
        body = []
        for d in shown:
            f = d.finding
            ident = f.advisory or f.rule
            ids = cves(f)
            if ids and ids[0] != ident:
                ident += " (" + ", ".join(ids[:3]) + ")"
            body.append((d.action, f.severity.label, f.category, ident, f.package or "-", f.installed or "-",
                         fixed(f) or ("-" if not f.advisory else "none"), f.path or "-"))
        widths = [min(60, max(len(c), *(len(r[i]) for r in body))) for i, c in enumerate(_COLS)]
        lines.append("  ".join(c.ljust(w) for c, w in zip(_COLS, widths, strict=True)).rstrip())
        for r in body:
            lines.append("  ".join(_cell(c, w).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines.append("")
        lines.append("details:")
        for d in shown:
            f = d.finding
            extra = f" [{f.cis}]" if f.cis else ""
            lines.append(f"  {f.advisory or f.rule}: {f.detail}{extra}")
    if hidden:
        lines.append(f"({hidden} more left out by --severity, the alert thresholds (--all lists them) or ignores)")
    lines.append(f"scan: {duration_ms:.0f} ms, cache: {v.cache_hit}")
    return "\n".join(lines) + "\n"
