"""The run report as JSON for machines: every field of ``RunReport``, keys in a stable order.

Struct fields keep their declared order and dict keys are sorted, so two
reports of the same data are byte-for-byte equal.
"""

from __future__ import annotations

import msgspec

from dtf.reports.model import RunReport


def render_json(report: RunReport) -> str:
    encoded = msgspec.json.encode(report, order="deterministic")
    return msgspec.json.format(encoded, indent=2).decode() + "\n"
