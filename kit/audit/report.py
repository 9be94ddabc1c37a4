"""What the auditor reads: a text summary, JSON, CSV and a printable HTML
report. Everything comes from the auditor's database, streamed, so the size
of the evidence never decides the memory used. Every string that came from
input is escaped for its output: ``html.escape`` in HTML, formula
neutralisation in CSV (a spreadsheet must never run a cell).
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kit.audit.auditor import Summary
from kit.audit.codes import CODES, SEVERITIES, STATUSES
from kit.errors import MediaError
from kit.fsutil import (
    atomic_write,
    check_replaceable,
    fsync_dir,
    os_reason,
    output_folder,
)
from kit.storage.audit import AuditStore

SCHEMA_VERSION = 1
HTML_EXCEPTION_LIMIT = 2000  # rows shown in the HTML; CSV and JSON hold all
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

BUNDLE_COLUMNS = (
    "bundle_id", "lseq", "host", "env", "task", "identity", "owner",
    "not_before", "expires_at", "max_uses", "status", "uses", "denials", "last_use",
)  # fmt: skip
EXCEPTION_COLUMNS = (
    "code", "severity", "host", "seq", "bundle_id", "message", "file", "input_sha256",
)  # fmt: skip


def utc(t: int) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def summary_lines(summary: Summary) -> list[str]:
    c = summary.counts
    lines = [
        f"{c['receipts']} receipt(s) from {c['reporting_hosts']} of "
        f"{c['hosts']} enrolled host(s); {c['issuances']} "
        f"issuance(s) in {c['ledger_exports']} ledger export(s); {c['inputs']} "
        f"input(s) held ({summary.new_inputs} new, {summary.skipped_inputs} "
        "already held)",
        "verdicts: " + ", ".join(f"{k} {v}" for k, v in summary.verdicts.items()),
        "bundles:",
    ]
    lines += [f"  {s:<15} {summary.statuses.get(s, 0)}" for s in STATUSES]
    if summary.exceptions:
        lines.append("exceptions (worst first):")
        lines += [f"  {sev:<8} {code:<24} {n}" for code, sev, n in summary.exceptions]
    else:
        lines.append("no exceptions")
    return lines


def _exception(row: tuple[Any, ...]) -> dict[str, Any]:
    code, sev, host, seq, bundle_id, message, source, digest = row
    return {
        "code": code,
        "severity": SEVERITIES[sev],
        "host": host,
        "seq": seq,
        "bundle_id": bundle_id,
        "message": message,
        "file": source,
        "input_sha256": digest,
    }


def write_json(out: IO[str], summary: Summary, store: AuditStore) -> None:
    """One JSON object (schema version 1), written as it is read."""
    head = {
        "version": SCHEMA_VERSION,
        "now": summary.now,
        "leeway": summary.leeway,
        "clean": summary.clean,
        "verdicts": summary.verdicts,
        "counts": summary.counts,
        "statuses": summary.statuses,
        "exception_counts": [
            {"code": c, "severity": s, "count": n} for c, s, n in summary.exceptions
        ],
        "inputs": [
            {"sha256": d, "kind": k, "file": s, "size": n, "outcome": o}
            for d, k, s, n, o in store.inputs()
        ],
    }
    text = json.dumps(head, indent=2, sort_keys=True)
    out.write(text[:-2] + ',\n  "exceptions": [')
    # Each cursor is closed here, even when the reader goes away mid-way
    # (``| head``): never later, by the garbage collector, after the store.
    with closing(store.exceptions()) as rows:
        _stream(out, (_exception(r) for r in rows))
    out.write('],\n  "bundles": [')
    with closing(store.bundles()) as rows:
        _stream(out, (dict(zip(BUNDLE_COLUMNS, r, strict=True)) for r in rows))
    out.write("]\n}\n")


def _stream(out: IO[str], items: Iterator[dict[str, Any]]) -> None:
    first = True
    for item in items:
        out.write(("\n    " if first else ",\n    ") + json.dumps(item, sort_keys=True))
        first = False
    if not first:
        out.write("\n  ")


def neutralise(value: Any) -> Any:
    """A cell a spreadsheet would evaluate as a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# The bundles.csv columns that hold times: ISO 8601 UTC text there, which
# spreadsheets read as dates (JSON keeps Unix seconds); empty for none.
_CSV_TIMES = frozenset(
    BUNDLE_COLUMNS.index(c) for c in ("not_before", "expires_at", "last_use")
)


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else ""


def _bundle_rows(store: AuditStore) -> Generator[tuple[Any, ...]]:
    with closing(store.bundles()) as rows:
        for row in rows:
            yield tuple(iso(v) if i in _CSV_TIMES else v for i, v in enumerate(row))


def write_csv(folder: Path, store: AuditStore) -> tuple[Path, Path]:
    """bundles.csv (one row per bundle) and exceptions.csv (one per
    exception), written beside each other, then renamed into place."""
    output_folder(folder)
    bundles, exceptions = folder / "bundles.csv", folder / "exceptions.csv"
    with closing(_bundle_rows(store)) as rows:
        _atomic_csv(bundles, BUNDLE_COLUMNS, rows)
    with closing(_exception_rows(store)) as rows:
        _atomic_csv(exceptions, EXCEPTION_COLUMNS, rows)
    return bundles, exceptions


def _atomic_csv(
    path: Path, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]
) -> None:
    """Stream rows to a fresh temporary file beside ``path`` (created
    exclusively, never through a symbolic link), fsync it, rename it over
    ``path``, then fsync the folder: the approach of :func:`kit.fsutil.atomic_write`,
    without holding the whole file in memory. Only a regular file there is
    replaced (:func:`kit.fsutil.check_replaceable`)."""
    check_replaceable(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    created = False
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        created = True
        with open(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([neutralise(v) for v in row])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        created = False
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {os_reason(exc)}") from None
    finally:
        if created:  # never remove a file this call did not create
            with contextlib.suppress(OSError):
                tmp.unlink()
    fsync_dir(path.parent)


def _exception_rows(store: AuditStore) -> Generator[tuple[Any, ...]]:
    with closing(store.exceptions()) as rows:
        for row in rows:
            yield (row[0], SEVERITIES[row[1]], *row[2:])


# -- HTML ----------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#111}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #999}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;
padding:2px 6px;text-align:left;vertical-align:top}th{background:#eee}
.num{text-align:right}.critical{background:#f8c8c8}.high{background:#fde0c0}
.medium{background:#fff2b0}.low{background:#e8f0ff}.info{background:#f4f4f4}
.pass{color:#060;font-weight:bold}.fail{color:#a00;font-weight:bold}
.pending{color:#850;font-weight:bold}code{font-size:12px;word-break:break-all}
svg{display:block}@media print{body{margin:0}h2{page-break-after:avoid}
tr{page-break-inside:avoid}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def write_html(path: Path, summary: Summary, store: AuditStore, title: str) -> None:
    """A self-contained page (inline CSS, no script, no external resource)."""
    parts: list[str] = [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Reconciled at {_e(utc(summary.now))} with a leeway of "
        f"{summary.leeway} s. Only signed content is evidence.</p>",
        "<h2>Summary</h2><table><tr><th>verdict</th><th>result</th></tr>",
    ]
    for name, value in summary.verdicts.items():
        parts.append(
            f"<tr><td>{_e(name)}</td><td class={_e(value)}>{_e(value)}</td></tr>"
        )
    parts.append("</table><table><tr><th>count</th><th>value</th></tr>")
    for name, count in summary.counts.items():
        parts.append(f"<tr><td>{_e(name)}</td><td class=num>{count}</td></tr>")
    parts.append("</table><table><tr><th>bundle status</th><th>bundles</th></tr>")
    for status in STATUSES:
        n = summary.statuses.get(status, 0)
        parts.append(f"<tr><td>{_e(status)}</td><td class=num>{n}</td></tr>")
    parts.append(
        "</table><table><tr><th>severity</th><th>exception</th><th>count</th>"
        "<th>meaning</th></tr>"
    )
    for code, sev, n in summary.exceptions:
        parts.append(
            f"<tr class={_e(sev)}><td>{_e(sev)}</td><td>{_e(code)}</td>"
            f"<td class=num>{n}</td><td>{_e(CODES[code].meaning)}</td></tr>"
        )
    parts.append("</table>")
    parts += _timelines(store)
    parts += _exception_table(store)
    parts += _bundle_table(store)
    parts.append(
        "<h2>Inputs</h2><table><tr><th>SHA-256</th><th>kind</th><th>file (as first "
        "read)</th><th>bytes</th><th>outcome</th></tr>"
    )
    for digest, kind, source, size, outcome in list(store.inputs()):
        parts.append(
            f"<tr><td><code>{_e(digest)}</code></td><td>{_e(kind)}</td>"
            f"<td>{_e(source)}</td><td class=num>{size}</td><td>{_e(outcome)}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    atomic_write(path, "".join(parts).encode("utf-8"))


def _timelines(store: AuditStore) -> list[str]:
    """Per host: a bar of sequence numbers 1..highest, gaps in red and
    signed checkpoints as ticks; and the counts beside it."""
    out = [
        "<h2>Hosts</h2><p>Each bar spans sequence numbers 1 to the highest held: "
        "grey is held, red is missing, black ticks are signed checkpoints.</p>"
        "<table><tr><th>host</th><th>env</th><th>receipts</th><th>seq</th>"
        "<th>releases</th><th>denials</th><th>first / last receipt</th>"
        "<th>checkpoint</th><th>forks</th><th>timeline</th></tr>"
    ]
    for name, env, n, lo, hi, rel, den, t0, t1, top_cp, forks in store.host_lines():
        out.append(
            f"<tr><td>{_e(name)}</td><td>{_e(env) or '(not in ledger)'}</td>"
            f"<td class=num>{n}</td><td>{lo}..{hi}</td><td class=num>{rel}</td>"
            f"<td class=num>{den}</td><td>{_e(utc(t0))}<br>{_e(utc(t1))}</td>"
            f"<td class=num>{top_cp}</td><td class=num>{forks}</td>"
            f"<td>{_bar(hi, store.gaps(name), store.checkpoint_seqs(name))}</td></tr>"
        )
    out.append("</table>")
    return out


def _bar(top: int, gaps: list[tuple[int, int]], checkpoints: list[int]) -> str:
    width, height = 300, 14
    if top <= 0:
        return "(no receipts)"

    def x(seq: float) -> float:
        return round((seq - 1) / max(top, 1) * width, 2)

    shapes = [f'<rect x="0" y="2" width="{width}" height="10" fill="#bbb"/>']
    for a, b in gaps:
        w = max(x(b + 1) - x(a), 1)
        shapes.append(f'<rect x="{x(a)}" y="2" width="{w}" height="10" fill="#d00"/>')
    for seq in checkpoints:
        shapes.append(f'<rect x="{min(x(seq), width - 1)}" y="0" width="1" '
                      f'height="{height}" fill="#000"/>')  # fmt: skip
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="seq 1 to '
        f'{top}">' + "".join(shapes) + "</svg>"
    )


def _exception_table(store: AuditStore) -> list[str]:
    out = [
        "<h2>Exceptions</h2><table><tr><th>severity</th><th>code</th><th>host</th>"
        "<th>seq</th><th>bundle</th><th>finding</th><th>evidence file</th></tr>"
    ]
    with closing(store.exceptions(HTML_EXCEPTION_LIMIT + 1)) as rows:
        out += _exception_cells(rows)
        shown = len(out) - 1
    if not shown:
        out.append("<tr><td colspan=7>none</td></tr>")
    out.append("</table>")
    return out


def _exception_cells(rows: Iterator[tuple[Any, ...]]) -> list[str]:
    out: list[str] = []
    shown = 0
    for row in rows:
        if shown == HTML_EXCEPTION_LIMIT:
            out.append(
                f"<tr><td colspan=7>... more: see exceptions.csv or --json (the "
                f"first {HTML_EXCEPTION_LIMIT} are shown)</td></tr>"
            )
            break
        e = _exception(row)
        out.append(
            f"<tr class={_e(e['severity'])}><td>{_e(e['severity'])}</td>"
            f"<td>{_e(e['code'])}</td><td>{_e(e['host'])}</td>"
            f"<td class=num>{e['seq'] or ''}</td><td><code>{_e(e['bundle_id'])}"
            f"</code></td><td>{_e(e['message'])}</td><td>{_e(e['file'])}<br>"
            f"<code>{_e(e['input_sha256'][:16])}</code></td></tr>"
        )
        shown += 1
    return out


def _bundle_table(store: AuditStore) -> list[str]:
    """Bundles that need a look (not used within limits nor simply pending),
    capped like the exception list."""
    out = [
        "<h2>Bundles needing attention</h2><table><tr><th>bundle</th><th>host</th>"
        "<th>task</th><th>owner</th><th>expires</th><th>status</th><th>uses</th>"
        "</tr>"
    ]
    with closing(store.bundles()) as rows:
        out += _bundle_cells(rows)
        shown = len(out) - 1
    if not shown:
        out.append("<tr><td colspan=7>none</td></tr>")
    out.append("</table>")
    return out


def _bundle_cells(rows: Iterator[tuple[Any, ...]]) -> list[str]:
    out: list[str] = []
    shown = 0
    for row in rows:
        b = dict(zip(BUNDLE_COLUMNS, row, strict=True))
        if b["status"] not in ("unaccounted", "expired-unused", "revoked", "denied"):
            continue
        if shown == HTML_EXCEPTION_LIMIT:
            out.append("<tr><td colspan=7>... more: see bundles.csv</td></tr>")
            break
        out.append(
            f"<tr><td><code>{_e(b['bundle_id'])}</code></td><td>{_e(b['host'])}</td>"
            f"<td>{_e(b['task'])}</td><td>{_e(b['owner'])}</td>"
            f"<td>{_e(utc(int(b['expires_at'])))}</td><td>{_e(b['status'])}</td>"
            f"<td class=num>{b['uses']}/{b['max_uses']}</td></tr>"
        )
        shown += 1
    return out
