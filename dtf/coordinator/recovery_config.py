"""The recovery config file (``dtf coordinator --recovery-config FILE``).

YAML (or JSON): the recovery policy's fields (``mode``, ``max_attempts``,
``batch_size_floor``, ``hardware_ladders``, ``failure_ladders``, backoff) plus
``classification_rules``, tried before the built-in ones. See
``examples/recovery.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dtf.core.failures import DEFAULT_RULES, ClassificationRule, rules_from_config
from dtf.core.recovery_policy import RecoveryPolicy, policy_from_config
from dtf.errors import InvalidRequest


def load_recovery_config(path: Path) -> tuple[RecoveryPolicy, tuple[ClassificationRule, ...]]:
    data = _read_mapping(path)
    rules_data = data.pop("classification_rules", None)
    try:
        policy = policy_from_config(data)
        rules = rules_from_config(rules_data) if rules_data is not None else DEFAULT_RULES
    except InvalidRequest as exc:
        raise InvalidRequest(f"{path}: {exc.message}", field=exc.field) from None
    return policy, rules


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequest(f"cannot read recovery config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"recovery config {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"recovery config {path} must hold a mapping (mode, ladders, rules), "
            f"not a {type(data).__name__}"
        )
    return data
