"""The coordinator process: recover state, serve the API, run the clock.

Start-up replays the journal (newest snapshot plus tail) into the state,
then journals ``CoordinatorStarted`` so leases get a fresh period instead of
being charged for our own downtime. The clock loop submits ``Tick`` only
when the state says something is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.openapi.utils import get_openapi

from dtf import __version__
from dtf import protocol as p
from dtf.cluster.settings import host_node_id
from dtf.cluster.view import ClusterView, StandaloneCluster
from dtf.coordinator.api import build_router
from dtf.coordinator.auth import Authenticator, load_or_create_admin_key
from dtf.coordinator.blob_peers import BlobPeers
from dtf.coordinator.bodies import (
    KeyRequest,
    LookupRequest,
    SubmitBatch,
    WaitRequest,
    schema_components,
)
from dtf.coordinator.bus import Bus, CommandBus
from dtf.coordinator.checkpoint_grants import GrantIssuer
from dtf.coordinator.checkpoint_store import CheckpointStore
from dtf.coordinator.checkpoints_api import checkpoint_router
from dtf.coordinator.cluster_api import cluster_router
from dtf.coordinator.consistency import AppliedPosition
from dtf.coordinator.datadir import DataDirLock
from dtf.coordinator.errors import install_error_handlers
from dtf.coordinator.limits import BodySizeLimit
from dtf.coordinator.live import LiveChannel
from dtf.coordinator.reports_api import reports_router
from dtf.coordinator.responses import json_response
from dtf.coordinator.results_api import results_router
from dtf.coordinator.runtime import Runtime
from dtf.coordinator.settings import CoordinatorSettings
from dtf.coordinator.worker_hub import WorkerHub
from dtf.core import commands as c
from dtf.core.model import TaskSpec
from dtf.core.state import StateConfig
from dtf.errors import DtfError
from dtf.heap import settle_after_start
from dtf.journal.sqlite import SqliteJournal
from dtf.results.ingest import ResultsIngester
from dtf.results.reads import ResultsReads
from dtf.results.store import ResultsStore

if TYPE_CHECKING:
    from dtf.cluster.node import ClusterNode

log = logging.getLogger(__name__)

CLOCK_MAX_SLEEP_S = 0.5
FOLLOWER_POLL_S = 0.05
NODE_LOSS_MARGIN_S = 1.0
"""Time for the leader to see a node's record vanish and journal its loss."""
ETCD_LEADER_CHANGE_S = 1.0
"""How much longer a node's record can last than its TTL: etcd renews every lease
when its leader changes, which takes up to one etcd election timeout (1 s by
etcd's default; 300-500 ms as the README advises for production)."""


@dataclass
class _Parts:
    """What a coordinator opens at start, closed in reverse order at shutdown."""

    lock: DataDirLock
    journal: SqliteJournal | None  # None in a cluster: the log is in etcd
    results: ResultsStore
    ingester: ResultsIngester
    reads: ResultsReads
    grants: GrantIssuer
    runtime: Runtime
    cluster: ClusterView
    node: ClusterNode | None


def create_app(settings: CoordinatorSettings, node: ClusterNode | None = None) -> FastAPI:
    """The coordinator's app: standalone with its journal in the data dir, or
    serving ``node``'s cluster (opened and caught up by the caller)."""
    parts = _open(settings, node)
    app = FastAPI(title="dtf coordinator", version=__version__, lifespan=_lifespan(parts))
    app.state.runtime = parts.runtime
    _mount(app, parts)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AppliedPosition,
        applied_seq=lambda: parts.runtime.state.applied_seq,
        wait_applied=node.bus.wait_applied if node else None,
    )
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _open(settings: CoordinatorSettings, node: ClusterNode | None) -> _Parts:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    admin_key, created = load_or_create_admin_key(settings.data_dir, settings.admin_key)
    if created is not None:
        log.warning("no DTF_ADMIN_KEY set: created an admin key in %s (mode 0600)", created)
    journal = None if node else SqliteJournal(settings.data_dir)
    bus: Bus = node.bus if node else _recover(journal, settings)
    results = ResultsStore.open(settings.results_db)
    ingester = ResultsIngester(
        results, lambda: bus.state, flush_interval_s=settings.results_flush_interval_s
    )
    bus.subscribe(ingester.on_events)
    grants = GrantIssuer(admin_key)
    hub = WorkerHub(
        bus,
        lease_timeout_s=settings.lease_timeout_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        grants=grants,
        node_id=node.settings.node_id if node else "",
        node_incarnation=node.incarnation if node else "",
    )
    auth = Authenticator(admin_key, lambda: bus.state.api_keys)
    where = _journal_description(journal, node)
    runtime = Runtime(settings, bus, hub, auth, where)
    bus.subscribe(runtime.waiters.on_events)
    cluster: ClusterView = node.view if node else _standalone(settings, runtime)
    reads = ResultsReads(ingester)
    return _Parts(lock, journal, results, ingester, reads, grants, runtime, cluster, node)


def _recover(journal: SqliteJournal | None, settings: CoordinatorSettings) -> CommandBus:
    assert journal is not None
    return CommandBus.recover(journal, snapshot_every=settings.snapshot_every)


def _journal_description(journal: SqliteJournal | None, node: ClusterNode | None) -> str:
    if node is None:
        assert journal is not None
        return str(journal.path)
    return f"etcd {','.join(node.settings.etcd.endpoints)} (cluster {node.settings.name})"


def _standalone(settings: CoordinatorSettings, runtime: Runtime) -> StandaloneCluster:
    url = f"http://{settings.host}:{settings.port}"
    node_id = host_node_id(settings.port)
    return StandaloneCluster(node_id, url, lambda: runtime.state.applied_seq, runtime.started_at)


def _lifespan(parts: _Parts) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        parts.ingester.start()
        if parts.node is None:
            clock = await start_serving(parts.runtime)
        else:
            clock = await start_cluster_serving(parts.runtime, parts.node)
        try:
            yield
        finally:
            clock.cancel()
            if parts.node is None:
                await parts.runtime.bus.stop()
            else:
                await parts.node.stop()
            parts.reads.close()
            parts.ingester.stop()
            parts.results.close()
            if parts.journal is not None:
                parts.journal.close()
            parts.lock.release()

    return lifespan


def _mount(app: FastAPI, parts: _Parts) -> None:
    """The REST routers, the live channel and the unauthenticated liveness check."""
    runtime, settings = parts.runtime, parts.runtime.settings
    app.include_router(build_router(runtime))
    checkpoints = CheckpointStore(
        settings.data_dir / "checkpoints", max_bytes=settings.max_body_bytes
    )
    peers = None
    if parts.node is not None:
        admin_key, _ = load_or_create_admin_key(settings.data_dir, settings.admin_key)
        node_id = parts.node.settings.node_id
        peers = BlobPeers.of_cluster(checkpoints, parts.cluster, node_id, admin_key)
    app.include_router(checkpoint_router(runtime, checkpoints, parts.grants, peers))
    app.include_router(results_router(runtime, parts.reads))
    app.include_router(reports_router(runtime, parts.reads))
    app.include_router(cluster_router(runtime, parts.cluster))
    live = LiveChannel(runtime, parts.reads, parts.cluster)

    @app.websocket("/ws")
    async def live_channel(websocket: WebSocket) -> None:
        """Requests (get_status, get_aggregated_results) and pushed updates (subscribe)."""
        await live.serve(websocket)

    @app.get("/health", tags=["status"])
    async def health() -> Any:
        """Liveness: no authentication."""
        return json_response({"ok": True, "journal_seq": runtime.state.applied_seq})


async def start_serving(runtime: Runtime) -> asyncio.Task[None]:
    """Start the journal writer, journal changed settings and the restart, start the clock."""
    bus, settings = runtime.bus, runtime.settings
    bus.start()
    await journal_start(runtime)
    log.info("coordinator serving on http://%s:%d", settings.host, settings.port)
    return asyncio.create_task(run_clock(bus), name="dtf-clock")


async def journal_start(runtime: Runtime, *, connections_lost: bool = True) -> None:
    """Journal changed settings and a fresh lease period: a coordinator (or a
    cluster's new leader) does not charge running tasks for its own downtime.
    A new cluster leader keeps its workers' connections (``connections_lost=False``)."""
    bus, config = runtime.bus, state_config(runtime.settings)
    if bus.state.config != config:
        await bus.execute(c.Configure(time.time(), config))
    await bus.execute(c.CoordinatorStarted(time.time(), connections_lost))


async def start_cluster_serving(runtime: Runtime, node: ClusterNode) -> asyncio.Task[None]:
    """Start the log writer and applier, join the election; the clock ticks
    only while this node leads."""
    node.bus.start()
    _warn_if_leases_outrun_node_loss(runtime.settings, node)
    await node.start(on_elected=lambda: journal_start(runtime, connections_lost=False))
    log.info("coordinator %s serving on %s", node.settings.node_id, node.settings.advertise_url)
    return asyncio.create_task(
        run_clock(node.bus, lambda: node.election.is_leader), name="dtf-clock"
    )


def _warn_if_leases_outrun_node_loss(settings: CoordinatorSettings, node: ClusterNode) -> None:
    """A node cut off from etcd is declared lost up to its registry TTL, plus an
    etcd leader change that renews the record's lease, plus a moment to journal
    it, after the cut; its workers' leases must last longer, or they expire
    first and count against their tasks and workers."""
    lasts_s = settings.lease_timeout_s - settings.heartbeat_interval_s
    needed_s = node.registry_ttl_s + ETCD_LEADER_CHANGE_S + NODE_LOSS_MARGIN_S
    if lasts_s <= needed_s:
        log.warning(
            "leases (--lease-timeout %g s, heartbeats every %g s) can expire before the loss "
            "of a node cut off from etcd is journaled (registry TTL %d s, + %g s should an "
            "etcd leader change renew its record, + %g s to journal it): give a lease "
            "timeout over %g s plus one heartbeat interval",
            settings.lease_timeout_s,
            settings.heartbeat_interval_s,
            node.registry_ttl_s,
            ETCD_LEADER_CHANGE_S,
            NODE_LOSS_MARGIN_S,
            needed_s,
        )


def state_config(settings: CoordinatorSettings) -> StateConfig:
    cluster_only = (
        {}
        if settings.cluster is None
        else {"max_coordinator_losses": settings.cluster.max_coordinator_losses}
    )
    return StateConfig(
        settings.lease_timeout_s,
        settings.worker_timeout_s,
        settings.recovery,
        settings.classification_rules,
        settings.circuit_breaker_threshold,
        settings.circuit_breaker_reset_s,
        settings.poison_after_worker_crashes,
        settings.retry_budget_share,
        settings.retry_budget_min_tasks,
        settings.health_threshold,
        settings.health_half_life_s,
        **cluster_only,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        bodies = [
            TaskSpec,
            SubmitBatch,
            WaitRequest,
            LookupRequest,
            KeyRequest,
            p.Register,
            p.HeartbeatRequest,
            p.HealthCheckRequest,
            p.Started,
            p.OutcomeReport,
        ]
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            schema_components(bodies)
        )
        app.openapi_schema = schema
    return app.openapi_schema


async def run_clock(bus: Bus, may_tick: Callable[[], bool] = lambda: True) -> None:
    """Submit a ``Tick`` whenever a lease, retry, fallback or worker timeout is
    due (in a cluster, only while ``may_tick``: this node leads)."""
    while True:
        if not may_tick():
            await asyncio.sleep(FOLLOWER_POLL_S)
            continue
        deadline = bus.state.next_deadline()
        now = time.time()
        if deadline is not None and deadline <= now:
            try:
                await bus.execute(c.Tick(now))
            except DtfError as exc:
                log.warning("tick refused: %s", exc)
            continue
        wait = CLOCK_MAX_SLEEP_S if deadline is None else min(deadline - now, CLOCK_MAX_SLEEP_S)
        await asyncio.sleep(max(wait, 0.005))


def run_coordinator(settings: CoordinatorSettings) -> int:
    """Serve until SIGINT or SIGTERM. Returns the process exit code."""
    if settings.cluster is not None:
        return asyncio.run(_serve_cluster(settings))
    app = create_app(settings)
    settle_after_start()
    _server(app, settings).run()
    return 0


async def _serve_cluster(settings: CoordinatorSettings) -> int:
    """Catch up with the cluster from etcd, then serve (etcd's gRPC channel
    belongs to this event loop, so uvicorn runs on it too)."""
    from dtf.cluster.node import ClusterNode

    assert settings.cluster is not None
    node = await ClusterNode.open(settings.cluster, snapshot_every=settings.snapshot_every)
    try:
        app = create_app(settings, node)
    except BaseException:
        await node.etcd.close()
        raise
    settle_after_start()
    await _server(app, settings).serve()
    return 0


def _server(app: FastAPI, settings: CoordinatorSettings) -> uvicorn.Server:
    """The uvicorn server for ``app``; its worker hub knows when it is shutting down."""
    server = uvicorn.Server(_server_config(app, settings))
    runtime: Runtime = app.state.runtime
    runtime.hub.is_stopping = lambda: server.should_exit
    return server


def _server_config(app: FastAPI, settings: CoordinatorSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws="websockets-sansio",
        ws_max_size=16 * 1024 * 1024,
        access_log=False,
        lifespan="on",
    )
