"""The report formats by name, and the one way to make a report: build, then render."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from dtf.errors import InvalidRequest
from dtf.reports.build import build_report
from dtf.reports.html import render_html
from dtf.reports.json_report import render_json
from dtf.reports.junit import render_junit
from dtf.reports.markdown import render_markdown
from dtf.reports.model import RunReport


@dataclass(frozen=True)
class ReportFormat:
    name: str
    media_type: str
    suffix: str
    render: Callable[[RunReport], str]


FORMATS = {
    f.name: f
    for f in (
        ReportFormat("html", "text/html; charset=utf-8", ".html", render_html),
        ReportFormat("md", "text/markdown; charset=utf-8", ".md", render_markdown),
        ReportFormat("json", "application/json", ".json", render_json),
        ReportFormat("junit", "application/xml", ".xml", render_junit),
    )
}


def report_format(name: str) -> ReportFormat:
    if name not in FORMATS:
        raise InvalidRequest(
            f"unknown report format {name!r}; choose one of {', '.join(FORMATS)}", field="format"
        )
    return FORMATS[name]


def make_report(cursor: duckdb.DuckDBPyConnection, run_id: str, format_name: str) -> str:
    """The report of ``run_id`` in ``format_name`` (html, md, json, junit) as text."""
    chosen = report_format(format_name)
    return chosen.render(build_report(cursor, run_id))
