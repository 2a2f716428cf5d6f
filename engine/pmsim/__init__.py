"""The reference PM API server (`chargebridge pm-sim`): a real HTTP server that stands in
for a practice-management system. It enforces Idempotency-Key, counts duplicates, and can
be told to be slow, flaky, scripted or down — the demo config and the outbound tests use it.
"""

from engine.pmsim.server import PmSim, SimSettings

__all__ = ["PmSim", "SimSettings"]
