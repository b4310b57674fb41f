"""The fault suite's scale: the short form by default (CI), the full form with HITSTREAM_FAULTS=full
(`bash scripts/faults`)."""
import os

FULL = os.environ.get("HITSTREAM_FAULTS", "short") == "full"


def scale(short: int, full: int) -> int:
    """`full` in the full form of the fault suite, else `short`."""
    return full if FULL else short
