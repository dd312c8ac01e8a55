"""The audit trail as CSV (RFC 4180) for auditors' spreadsheets. No HTTP here.

Nested values (a change's before/after, corrections) are written as JSON in one cell.
A cell a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return: OWASP "CSV injection") gets a leading apostrophe, so a customer who calls
themselves ``=HYPERLINK(...)`` cannot make an auditor's spreadsheet act.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    return text


def to_csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
    return out.getvalue()
