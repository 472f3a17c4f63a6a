"""The run report as JUnit XML, the dialect Maven Surefire writes and CI systems read.

How reruns appear: a task's last attempt counts (see ``dtf.reports.views``).
A test that failed in an earlier attempt carries that failure as
``<flakyFailure>`` / ``<flakyError>`` when it passed at the end, and as
``<rerunFailure>`` / ``<rerunError>`` beside its final ``<failure>`` /
``<error>`` when it did not. Every attempt is also listed in the suite's
``<properties>`` (``dtf.attempt.N``: status, failure, recovery, worker).

One ``<testsuite>`` per test task; one more per other task type
(``benchmark``, ``command``, ...) with a ``<testcase>`` per task, whose
metrics are ``<properties>`` of that test case (a list of repeats is one
comma-separated value). xfailed tests are skipped, as pytest reports them;
xpassed ones pass. Characters XML 1.0 cannot hold
and colour codes are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from dtf.reports.model import AttemptResult, RunReport, TaskResult, TestCaseResult
from dtf.reports.views import (
    CaseHistory,
    case_histories,
    failure_text,
    is_broken_attempt,
    last_attempt,
    plain,
)

NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MESSAGE_CHARS = 500
SKIPPED_OUTCOMES = frozenset({"skipped", "xfailed"})
FINAL_ELEMENTS = {"failed": "failure", "error": "error"}
INTERIM_ELEMENTS = {
    ("failed", True): "flakyFailure",
    ("error", True): "flakyError",
    ("failed", False): "rerunFailure",
    ("error", False): "rerunError",
}
COUNTED = ("tests", "failures", "errors", "skipped")


def render_junit(report: RunReport) -> str:
    root = ET.Element("testsuites", name=clean(f"dtf run {report.run_id}"))
    by_type: dict[str, list[TaskResult]] = defaultdict(list)
    for task in report.tasks:
        if task.task_type == "test":
            root.append(test_suite(report.run_id, task))
        else:
            by_type[task.task_type].append(task)
    for task_type, tasks in by_type.items():
        root.append(task_suite(report.run_id, task_type, tasks))
    sum_counts(root, root.findall("testsuite"))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def test_suite(run_id: str, task: TaskResult) -> ET.Element:
    suite = ET.Element("testsuite", name=clean(task.name))
    last = last_attempt(task)
    properties = describe_suite(suite, run_id, task, last)
    for attempt in task.attempts:
        add_property(properties, f"dtf.attempt.{attempt.attempt}", attempt_text(attempt))
    for history in case_histories(task):
        suite.append(test_case(task, history))
    if last is not None and is_broken_attempt(last):
        case = ET.SubElement(suite, "testcase", classname=clean(task.name))
        case.set("name", f"attempt {last.attempt}")
        case.set("time", seconds(last.duration_s))
        outcome(case, "error", last.failure_type or last.status, failure_text(last))
    count_cases(suite)
    return suite


def describe_suite(
    suite: ET.Element, run_id: str, task: TaskResult, last: AttemptResult | None
) -> ET.Element:
    """Set where and when the suite ran; returns its ``<properties>``."""
    if last is not None:
        suite.set("hostname", clean(last.worker_id or "unknown"))
        if last.finished_at is not None:
            stamp = datetime.fromtimestamp(last.finished_at - (last.duration_s or 0.0), UTC)
            suite.set("timestamp", stamp.replace(tzinfo=None).isoformat(timespec="seconds"))
    properties = ET.SubElement(suite, "properties")
    add_property(properties, "dtf.run_id", run_id)
    add_property(properties, "dtf.task_id", task.task_id)
    add_property(properties, "dtf.status", task.status)
    add_property(properties, "dtf.attempts", str(len(task.attempts)))
    if last is not None and last.hardware_class:
        add_property(properties, "dtf.hardware_class", last.hardware_class)
    return properties


def test_case(task: TaskResult, history: CaseHistory) -> ET.Element:
    classname, name = split_node_id(history.node_id, task.name)
    final = history.final
    case = ET.Element("testcase", classname=clean(classname), name=clean(name))
    case.set("time", seconds(final.duration_s))
    if final.outcome in FINAL_ELEMENTS:
        outcome(case, FINAL_ELEMENTS[final.outcome], final.outcome, final.message or "")
    elif final.outcome in SKIPPED_OUTCOMES:
        skipped = ET.SubElement(case, "skipped", message=short(final.message or final.outcome))
        skipped.set("type", final.outcome)
    for earlier in history.earlier:
        element = INTERIM_ELEMENTS[(earlier.case.outcome, history.is_flaky)]
        interim(case, element, earlier.attempt, earlier.case)
    return case


def interim(case: ET.Element, tag: str, attempt: int, result: TestCaseResult) -> None:
    text = f"attempt {attempt}: {result.message or result.outcome}"
    element = ET.SubElement(case, tag, message=short(text), type=result.outcome)
    if result.message:
        ET.SubElement(element, "stackTrace").text = clean(result.message)


def task_suite(run_id: str, task_type: str, tasks: list[TaskResult]) -> ET.Element:
    suite = ET.Element("testsuite", name=clean(task_type))
    properties = ET.SubElement(suite, "properties")
    add_property(properties, "dtf.run_id", run_id)
    for task in tasks:
        suite.append(task_case(task_type, task))
    count_cases(suite)
    return suite


def task_case(task_type: str, task: TaskResult) -> ET.Element:
    last = last_attempt(task)
    case = ET.Element("testcase", classname=clean(f"{task_type}.{task.model or task.name}"))
    case.set(
        "name", clean(task.name if task.name == task.task_id else f"{task.name} [{task.task_id}]")
    )
    case.set("time", seconds(last.duration_s if last else None))
    if last is not None:
        case.append(attempt_properties(task, last))
    passed = task.status == "completed"
    if task.status in ("cancelled", "unfinished"):
        ET.SubElement(case, "skipped", message=clean(task.status_reason or task.status))
    elif not passed:
        reason = failure_text(last) if last else task.status_reason or task.status
        outcome(case, "failure", (last.failure_type if last else None) or task.status, reason)
    for attempt in task.attempts[:-1]:
        if attempt.status != "succeeded":
            tag = "flakyFailure" if passed else "rerunFailure"
            text = f"attempt {attempt.attempt}: {failure_text(attempt)}"
            ET.SubElement(case, tag, message=short(text), type=attempt.failure_type or "failed")
    return case


def attempt_properties(task: TaskResult, last: AttemptResult) -> ET.Element:
    properties = ET.Element("properties")
    add_property(properties, "dtf.task_id", task.task_id)
    add_property(properties, "dtf.attempts", str(len(task.attempts)))
    where = {
        "dtf.worker": last.worker_id,
        "dtf.hardware_class": last.hardware_class,
        "dtf.device_model": last.device_model,
        "dtf.batch_size": None if last.batch_size is None else str(last.batch_size),
        "dtf.precision": last.precision,
    }
    for name, value in where.items():
        if value:
            add_property(properties, name, value)
    for metric, values in sorted(last.metrics.items()):
        add_property(properties, metric, ",".join(repr(v) for v in values))
    return properties


def attempt_text(attempt: AttemptResult) -> str:
    parts = [attempt.status]
    if attempt.status != "succeeded":
        parts.append(failure_text(attempt))
    if attempt.recovery:
        parts.append(f"recovery {attempt.recovery}")
    parts.append(f"worker {attempt.worker_id or 'unknown'}")
    return "; ".join(parts)


def outcome(case: ET.Element, tag: str, kind: str, text: str) -> None:
    element = ET.SubElement(case, tag, message=short(text or kind), type=clean(kind))
    if text:
        element.text = clean(text)


def add_property(properties: ET.Element, name: str, value: str) -> None:
    ET.SubElement(properties, "property", name=clean(name), value=clean(value))


def count_cases(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    total = sum(float(c.get("time", "0")) for c in cases)
    suite.set("time", f"{total:.3f}")


def sum_counts(root: ET.Element, suites: Iterable[ET.Element]) -> None:
    listed = list(suites)
    for name in COUNTED:
        root.set(name, str(sum(int(s.get(name, "0")) for s in listed)))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in listed):.3f}")


def split_node_id(node_id: str, task_name: str) -> tuple[str, str]:
    """``tests/test_a.py::TestX::test_y[1]`` -> (``tests.test_a.TestX``, ``test_y[1]``)."""
    head, separator, name = node_id.rpartition("::")
    if not separator:
        return task_name, node_id
    module, _, inner = head.partition("::")
    module = module.removesuffix(".py").replace("/", ".").replace("\\", ".")
    return ".".join(part for part in (module, inner.replace("::", ".")) if part), name


def seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return clean(line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…")


def clean(text: str) -> str:
    return NOT_XML.sub("", plain(text))
