"""Production monitoring: drift statistics (drift.py), thresholds and verdict (checks.py), what to queue (triage.py)."""
