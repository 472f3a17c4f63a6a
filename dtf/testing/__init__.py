"""Test support shipped with dtf: factories, state invariants and a fleet simulator.

Everything here drives the real ``dtf.core.state.State``; nothing is mocked.
"""
