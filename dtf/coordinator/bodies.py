"""Request bodies: decoded and validated with msgspec, errors naming the field.

The same structs give the OpenAPI document its schemas, so the published
contract is the one the code enforces.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, Struct

from dtf.core import commands as c
from dtf.core.model import TaskSpec, validate_config
from dtf.core.records import Role
from dtf.errors import InvalidRequest

MAX_BATCH = 100_000
# A lookup builds every view at once on the event loop, which in a cluster keeps the
# node's leader lease alive: a tenth of a batch at most.
MAX_LOOKUP = 10_000
MAX_WAIT_S = 300.0
T = TypeVar("T")


class SubmitBatch(Struct, forbid_unknown_fields=True):
    tasks: Annotated[list[TaskSpec], Meta(min_length=1, max_length=MAX_BATCH)]
    reject_unsatisfiable: bool = False


class WaitRequest(Struct, forbid_unknown_fields=True):
    task_ids: Annotated[list[str], Meta(min_length=1, max_length=MAX_BATCH)]
    timeout_s: Annotated[float, Meta(ge=0, le=MAX_WAIT_S)] = 30.0


class LookupRequest(Struct, forbid_unknown_fields=True):
    task_ids: Annotated[list[str], Meta(min_length=1, max_length=MAX_LOOKUP)]


class KeyRequest(Struct, forbid_unknown_fields=True):
    role: Role
    name: Annotated[str, Meta(max_length=128)] = ""


_FIELD = re.compile(r"at `\$\.?([^`]*)`")


def decode_body(raw: bytes, kind: type[T]) -> T:
    """Decode a JSON body into ``kind`` or raise ``InvalidRequest`` naming the field."""
    if not raw.strip():
        raise InvalidRequest(f"request body is empty; send a JSON {kind.__name__} object")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc), field=field_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply") from None


def field_of(message: str) -> str | None:
    found = _FIELD.search(message)
    return found.group(1) or None if found else None


def new_tasks(specs: list[TaskSpec], *, path: str = "tasks") -> list[c.NewTask]:
    """Give each spec its id (client-chosen or fresh) after checking its config."""
    tasks = []
    for index, spec in enumerate(specs):
        where = f"{path}[{index}].config" if path else "config"
        try:
            validate_config(spec.type, spec.config, path=where)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(str(exc), field=field_of(str(exc))) from None
        tasks.append(c.NewTask(spec.id or secrets.token_hex(16), spec))
    return tasks


def request_body(kind: type[Any]) -> dict[str, Any]:
    """An OpenAPI ``openapi_extra`` fragment pointing at ``kind``'s schema."""
    schema = {"$ref": f"#/components/schemas/{kind.__name__}"}
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


def schema_components(kinds: Sequence[type[Any]]) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        kinds, ref_template="#/components/schemas/{name}"
    )
    return components
