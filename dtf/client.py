"""A small synchronous client for the coordinator's REST API.

Given several coordinator URLs it talks to one at a time and moves on to the
next when a URL cannot be reached (or answers 503, as a coordinator that is not
the leader does). A request that may already have reached the server is only
resent when it is idempotent; submits are made idempotent by sending a
client-generated ``idempotency_key`` when the caller chose neither an id nor a
key, so a resent submit never creates a second task.

API errors come back as ``dtf.errors`` exceptions carrying the server's message
and offending field.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from dtf import errors
from dtf.core.model import TaskSpec, validate_config
from dtf.protocol import APPLIED_SEQ_HEADER, MIN_SEQ_HEADER

logger = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "http://127.0.0.1:8080"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
LONG_POLL_S = 5.0
"""The longest ``wait`` lets the coordinator hold one request (at most half the
client's request timeout)."""
LOOKUP_CHUNK = 1000
"""Tasks per ``lookup`` request: about a megabyte of JSON."""

Task = dict[str, Any]
SpecLike = dict[str, Any] | TaskSpec

_STATUS_ERRORS: dict[int, type[errors.DtfError]] = {
    400: errors.InvalidRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.InvalidRequest,
    422: errors.InvalidRequest,
    503: errors.CoordinatorUnavailable,
}
_NAMED_ERRORS: dict[str, type[errors.DtfError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.DtfError)
}


class WaitTimeout(errors.DtfError):
    """Tasks were still unfinished when ``Client.wait`` gave up."""

    status_code = 408


def parse_coordinators(coordinator: str | Sequence[str]) -> list[str]:
    """``"http://a:1, http://b:2"`` or a list of URLs -> clean list, trailing ``/`` dropped."""
    parts = coordinator.split(",") if isinstance(coordinator, str) else list(coordinator)
    urls = [part.strip().rstrip("/") for part in parts if part.strip()]
    if not urls:
        raise errors.InvalidRequest(
            f"no coordinator URL in {coordinator!r}; pass e.g. {DEFAULT_COORDINATOR}",
            field="coordinator",
        )
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise errors.InvalidRequest(
                f"coordinator URL {url!r} must start with http:// or https://",
                field="coordinator",
            )
    return urls


def error_from_response(response: httpx.Response) -> errors.DtfError:
    """The ``dtf.errors`` exception for an error response, keeping the server's words."""
    message, field, type_name = f"HTTP {response.status_code} from {response.url}", None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or message)
        field = error.get("field")
        type_name = error.get("type")
    cls = _NAMED_ERRORS.get(str(type_name)) or _STATUS_ERRORS.get(response.status_code)
    return (cls or errors.DtfError)(message, field=field)


def spec_to_body(spec: SpecLike) -> dict[str, Any]:
    """Validate a spec locally and add an idempotency key when it has no id or key."""
    try:
        task_spec = spec if isinstance(spec, TaskSpec) else msgspec.convert(spec, TaskSpec)
        validate_config(task_spec.type, task_spec.config)
    except msgspec.ValidationError as exc:
        raise errors.InvalidRequest(f"invalid task spec: {exc}") from None
    body: dict[str, Any] = msgspec.to_builtins(task_spec)
    if task_spec.id is None and task_spec.idempotency_key is None:
        body["idempotency_key"] = f"client-{uuid.uuid4().hex}"
    return body


class Client:
    """``Client("http://127.0.0.1:8080", api_key)``; also usable as a context manager."""

    def __init__(
        self,
        coordinator: str | Sequence[str] = DEFAULT_COORDINATOR,
        api_key: str | None = None,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = parse_coordinators(coordinator)
        self._current = 0
        self._seen_seq = 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)
        self._clock = clock
        self._long_poll_s = min(LONG_POLL_S, timeout_s / 2)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def url(self) -> str:
        """The coordinator URL the client is talking to now."""
        return self.urls[self._current]

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one API call, rotating through the coordinator URLs on connection failure."""
        failures: builtins.list[str] = []
        for _ in range(len(self.urls)):
            url = self.url
            try:
                response = self._http.request(
                    method, url + path, json=json, params=params, headers=self._position()
                )
            except httpx.TransportError as exc:
                if not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise self._unreachable([f"{url} ({exc_text(exc)})"], sent=True) from None
                failures.append(f"{url} ({exc_text(exc)})")
            else:
                if response.status_code != 503 or not idempotent:
                    return self._decode(response)
                failures.append(f"{url} (503: {error_from_response(response).message})")
            logger.info("coordinator %s failed; trying the next one", url)
            self._current = (self._current + 1) % len(self.urls)
        raise self._unreachable(failures, sent=False)

    def _position(self) -> dict[str, str]:
        """Ask for a state at least as new as the newest this client has seen, so a
        read from a lagging cluster node never goes back in time."""
        return {MIN_SEQ_HEADER: str(self._seen_seq)} if self._seen_seq else {}

    def _decode(self, response: httpx.Response) -> Any:
        applied = response.headers.get(APPLIED_SEQ_HEADER, "")
        if applied.isdigit():
            self._seen_seq = max(self._seen_seq, int(applied))
        if response.is_error:
            raise error_from_response(response)
        return response.json()

    def _unreachable(self, failures: builtins.list[str], *, sent: bool) -> errors.DtfError:
        tried = "; ".join(failures)
        if sent:
            return errors.CoordinatorUnavailable(
                f"lost the connection to coordinator {tried} after sending the request; "
                "it may or may not have been applied: check with `dtf tasks` before repeating it"
            )
        return errors.CoordinatorUnavailable(
            f"cannot reach coordinator at {tried}: is `dtf coordinator` running? "
            "set DTF_COORDINATOR or pass --coordinator"
        )

    def health(self) -> bool:
        return bool(self.request("GET", "/health", idempotent=True).get("ok"))

    def submit(self, spec: SpecLike, *, reject_unsatisfiable: bool = False) -> str:
        params = {"reject_unsatisfiable": "true"} if reject_unsatisfiable else None
        body = spec_to_body(spec)
        reply = self.request("POST", "/api/tasks", idempotent=True, json=body, params=params)
        return str(reply["task_id"])

    def submit_many(
        self, specs: Iterable[SpecLike], *, reject_unsatisfiable: bool = False
    ) -> builtins.list[str]:
        body = {
            "tasks": [spec_to_body(spec) for spec in specs],
            "reject_unsatisfiable": reject_unsatisfiable,
        }
        reply = self.request("POST", "/api/tasks/batch", idempotent=True, json=body)
        return [str(entry["task_id"]) for entry in reply["tasks"]]

    def get(self, task_id: str) -> Task:
        task: Task = self.request("GET", f"/api/tasks/{task_id}", idempotent=True)
        return task

    def lookup(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """The tasks, in the order given: one ``POST /api/tasks/lookup`` per
        ``LOOKUP_CHUNK`` ids instead of a request per task."""
        tasks: builtins.list[Task] = []
        for start in range(0, len(task_ids), LOOKUP_CHUNK):
            body = {"task_ids": list(task_ids[start : start + LOOKUP_CHUNK])}
            reply = self.request("POST", "/api/tasks/lookup", idempotent=True, json=body)
            tasks += reply["tasks"]
        return tasks

    def cancel(self, task_id: str) -> Task:
        task: Task = self.request("POST", f"/api/tasks/{task_id}/cancel", idempotent=True)
        return task

    def wait(
        self,
        task_ids: Sequence[str],
        timeout_s: float = 600.0,
        *,
        on_poll: Callable[[dict[str, int]], None] | None = None,
    ) -> builtins.list[Task]:
        """Wait until every task has finished; the tasks. The coordinator holds each
        request until they have or a few seconds pass (``POST /api/tasks/wait``);
        ``on_poll`` sees how many are in each status after each answer."""
        deadline = self._clock() + timeout_s
        body: dict[str, Any] = {"task_ids": list(task_ids)}
        while True:
            body["timeout_s"] = min(max(0.0, deadline - self._clock()), self._long_poll_s)
            reply = self.request("POST", "/api/tasks/wait", idempotent=True, json=body)
            if on_poll is not None:
                on_poll(reply["counts"])
            if reply["done"]:
                return self.lookup(task_ids)
            if self._clock() >= deadline:
                first = reply["unfinished"][0]
                raise WaitTimeout(
                    f"{reply['unfinished_total']} of {len(task_ids)} tasks not finished after "
                    f"{timeout_s:g}s (e.g. {first}); check them with "
                    f"`dtf task show {first}` or wait longer"
                )

    def workers(self) -> builtins.list[dict[str, Any]]:
        reply = self.request("GET", "/api/workers", idempotent=True)
        return list(reply["workers"])

    def worker(self, worker_id: str) -> dict[str, Any]:
        worker: dict[str, Any] = self.request("GET", f"/api/workers/{worker_id}", idempotent=True)
        return worker

    def set_worker_enabled(
        self, worker_id: str, *, enabled: bool, reason: str = ""
    ) -> dict[str, Any]:
        """End a worker's quarantine, or quarantine it by hand (admin key)."""
        action = "enable" if enabled else "disable"
        worker: dict[str, Any] = self.request(
            "POST", f"/api/workers/{worker_id}/{action}", idempotent=True, json={"reason": reason}
        )
        return worker

    def results(
        self, task_id: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if task_id is not None:
            params["task_id"] = task_id
        reply = self.request("GET", "/api/results", idempotent=True, params=params)
        return list(reply["results"])

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.request("GET", "/api/status", idempotent=True)
        return status

    def aggregate_results(
        self,
        by: Sequence[str],
        *,
        metric: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        """Statistics of metric samples per group of ``by`` dimensions: ``{"groups": [...]}``."""
        params: dict[str, Any] = {"by": ",".join(by)}
        optional = {"metric": metric, "run_id": run_id, "since": since}
        params.update({name: value for name, value in optional.items() if value is not None})
        reply: dict[str, Any] = self.request(
            "GET", "/api/results/aggregate", idempotent=True, params=params
        )
        return reply

    def regressions(
        self, *, metric: str | None = None, since: float | None = None, min_change: float = 0.02
    ) -> dict[str, Any]:
        """Change points of every metric series: ``{"alerts", "groups", "refused", "tests"}``."""
        params = {"metric": metric, "since": since, "min_change": min_change}
        return self._results("regressions", params)

    def compare_runs(self, run_a: str, run_b: str) -> dict[str, Any]:
        """Run A against run B: ``{"metrics", "tests", "refused", "only_in_a", "only_in_b"}``."""
        return self._results("compare", {"run_a": run_a, "run_b": run_b})

    def flaky_tests(self, *, since: float | None = None) -> builtins.list[dict[str, Any]]:
        return builtins.list(self._results("flaky", {"since": since})["flaky"])

    def anomalies(self, *, since: float | None = None) -> dict[str, Any]:
        """``{"groups_checked", "groups": [{"subject", "key", "report"}]}``."""
        return self._results("anomalies", {"since": since})

    def trends(self, *, metric: str | None = None, steps: int = 5) -> builtins.list[dict[str, Any]]:
        """Per series ``{"key", "trend"}``: slope with its interval and a forecast."""
        return builtins.list(self._results("trends", {"metric": metric, "steps": steps})["trends"])

    def regression_alerts(self, *, since: float | None = None) -> builtins.list[dict[str, Any]]:
        """The alerts the coordinator's online check stored, each in its newest state."""
        return builtins.list(self._results("alerts", {"since": since})["alerts"])

    def _results(self, route: str, params: dict[str, Any]) -> dict[str, Any]:
        present = {name: value for name, value in params.items() if value is not None}
        reply: dict[str, Any] = self.request(
            "GET", f"/api/results/{route}", idempotent=True, params=present
        )
        return reply

    def export_results(self, path: Path, *, table: str, file_format: str) -> int:
        """Download one results table as parquet, csv or json into ``path``; returns bytes written."""
        params = {"table": table, "format": file_format}
        url = self.url + "/api/results/export"
        try:
            with self._http.stream("GET", url, params=params) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                with path.open("wb") as output:
                    for chunk in response.iter_bytes():
                        output.write(chunk)
        except httpx.TransportError as exc:
            raise self._unreachable([f"{url} ({exc_text(exc)})"], sent=False) from None
        return path.stat().st_size

    def report(self, run_id: str, fmt: str = "html") -> str:
        """The report of run ``run_id`` as text: ``html``, ``md``, ``json`` or ``junit`` (XML)."""
        url = f"{self.url}/api/reports/{quote(run_id, safe='')}"
        try:
            response = self._http.get(url, params={"format": fmt})
        except httpx.TransportError as exc:
            raise self._unreachable([f"{url} ({exc_text(exc)})"], sent=False) from None
        if response.is_error:
            raise error_from_response(response)
        return response.text

    def failure_patterns(
        self, *, window_s: float = 3600.0, min_confidence: float = 0.0
    ) -> dict[str, Any]:
        """Recurring failures by worker, hardware class, failure type and task."""
        params = {"window_s": window_s, "min_confidence": min_confidence}
        reply: dict[str, Any] = self.request(
            "GET", "/api/failure-patterns", idempotent=True, params=params
        )
        return reply

    def create_key(self, role: str, name: str = "") -> dict[str, Any]:
        """A new API key; the reply holds ``key`` (shown only now), ``key_id`` and ``role``."""
        body = {"role": role, "name": name}
        reply: dict[str, Any] = self.request("POST", "/api/keys", idempotent=False, json=body)
        return reply

    def list_page(
        self, status: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """One page of tasks: ``{"tasks": [...], "total": n}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        page: dict[str, Any] = self.request("GET", "/api/tasks", idempotent=True, params=params)
        return page

    def list(
        self, status: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[Task]:
        return builtins.list(self.list_page(status, limit=limit, offset=offset)["tasks"])


def exc_text(exc: BaseException) -> str:
    """A transport error's text, or its class name when it has none."""
    return str(exc) or type(exc).__name__
