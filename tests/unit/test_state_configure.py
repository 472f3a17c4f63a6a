"""Settings are journaled: they change what follows them, and replay honours them."""

from __future__ import annotations

from dtf.core import commands as c
from dtf.core.recovery_policy import RecoveryMode, RecoveryPolicy
from dtf.core.state import State, StateConfig
from dtf.testing.factories import StateDriver, task_spec


def test_a_new_lease_timeout_applies_to_leases_granted_after_it() -> None:
    driver = StateDriver(StateConfig(lease_timeout_s=10.0))
    driver.register("w1", slots=2)
    driver.submit(("before", task_spec()), at=1.0)
    driver.apply(c.Configure(2.0, StateConfig(lease_timeout_s=4.0)))
    driver.submit(("after", task_spec()), at=3.0)
    leases = {t: driver.state.tasks[t].lease for t in ("before", "after")}
    assert leases["before"] is not None and leases["before"].expires_at == 11.0
    assert leases["after"] is not None and leases["after"].expires_at == 7.0


def test_replay_and_restore_keep_the_settings_in_force() -> None:
    driver = StateDriver()
    driver.register("w1")
    minimal = StateConfig(recovery=RecoveryPolicy(mode=RecoveryMode.MINIMAL))
    driver.apply(c.Configure(1.0, minimal))
    driver.submit(("t", task_spec()), at=2.0)
    replayed = State()
    for entry in driver.journal:
        replayed.apply(c.decode(entry))
    assert replayed.config == minimal
    assert replayed.snapshot() == driver.state.snapshot()
    assert State.restore(driver.state.snapshot()).config == minimal
