"""Reading a local coordinator cluster's state from its nodes' answers: has it formed,
and who leads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

Record = dict[str, Any]


def formation_problem(statuses: Mapping[str, Record | None], node_ids: list[str]) -> str | None:
    """Why the nodes' ``/api/cluster/status`` answers do not yet show one cluster of
    ``node_ids`` with one leader they all agree on; None once they do."""
    leaders: set[str | None] = set()
    for node_id, status in statuses.items():
        if status is None:
            return f"{node_id} does not answer /api/cluster/status yet"
        seen = sorted(node["node_id"] for node in status["nodes"])
        if seen != sorted(node_ids):
            return f"{node_id} sees nodes {', '.join(seen) or 'none'}"
        leaders.add(status["leader"]["node_id"] if status["leader"] else None)
    if None in leaders or len(leaders) != 1:
        return f"the nodes see leaders {', '.join(sorted(str(leader) for leader in leaders))}"
    return None


def newest_leader(leadership_replies: list[Record | None]) -> Record | None:
    """Of several nodes' ``/api/cluster/leader`` replies, the current leader of the latest
    epoch any of them knows (None: no node answers or none knows a leader)."""
    leaders = [reply["leader"] for reply in leadership_replies if reply and reply["leader"]]
    return max(leaders, key=lambda leader: int(leader["epoch"]), default=None)


def get_json(http: httpx.Client, url: str, path: str) -> Record | None:
    """A node's JSON answer to ``GET path``; None when it does not answer 200."""
    try:
        response = http.get(url + path)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    reply: Record = response.json()
    return reply
