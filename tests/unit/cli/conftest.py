"""Every test here keeps its state in a private directory (tests/fixtures/state.py)."""

from tests.fixtures.state import private_state_dir  # noqa: F401  (autouse fixture)
