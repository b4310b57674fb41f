"""One progress record, shaped like Spark's StreamingQueryProgress, from a telemetry snapshot.

The fields:

    id, runId, name, timestamp, batchId (the record's sequence number), numInputRows, inputRowsPerSecond,
    processedRowsPerSecond, durationMs {getBatch: time in source read calls, which includes the parse and
    pre-aggregation steps fused with them; addBatch: time in sink writes; triggerExecution: their sum},
    eventTime {watermark, min, max, avg} (hittime of the interval's hits, avg from a sample of each batch;
    watermark = the slowest partition's),
    sources [{description, startOffset, endOffset, latestOffset {topic: {partition: offset}}, numInputRows,
    inputRowsPerSecond, processedRowsPerSecond, lag {topic: {partition: n}}, metrics {min/avg/maxOffsetsBehindLatest}}],
    sinks [{description, numOutputRows, errors, totalOutputRows, totalErrors}],
    lateRows, deadLetterRows (this interval) and totalInputRows, totalLateRows, totalDeadLetterRows,
    windowAccounting {hitsIntoWindows, lateHits, hitsInFinalWindows, windowSlots, finalWindowSlots}.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

from transforms.telemetry import IntervalCounts, PartitionState, SinkCounts
from transforms.times import iso_utc_micros


def _now_iso() -> str:
    return iso_utc_micros(time.time() * 1e6)


def _per_topic(values: Dict[Tuple[str, int], Optional[int]]) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for (topic, partition), value in sorted(values.items()):
        if value is not None:
            out.setdefault(topic, {})[str(partition)] = value
    return out


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 3) if seconds > 0 else 0.0


def build_progress(snapshot: Dict[str, Any], *, query_id: str, run_id: str, name: str, batch_id: int,
                   elapsed: float) -> Dict[str, Any]:
    """One StreamingQueryProgress-shaped record from a registry snapshot covering `elapsed` seconds."""
    interval: IntervalCounts = snapshot["interval"]
    partitions: Dict[Tuple[str, int], PartitionState] = snapshot["partitions"]
    sinks: Dict[str, SinkCounts] = snapshot["sinks"]
    write_seconds = sum(s.seconds for s in sinks.values())
    busy_seconds = interval.read_seconds + write_seconds
    get_batch_ms = int(round(interval.read_seconds * 1000))
    add_batch_ms = int(round(write_seconds * 1000))
    trigger_ms = int(round(busy_seconds * 1000))
    watermarks = [p.watermark for p in partitions.values()]
    watermark = min(watermarks) if watermarks and None not in watermarks else None
    event_time = {"watermark": iso_utc_micros(watermark)}
    if interval.event_count:
        event_time.update(min=iso_utc_micros(interval.event_min), max=iso_utc_micros(interval.event_max),
                          avg=iso_utc_micros(interval.event_sum / interval.event_count))
    sources = []
    if partitions:
        lag = {tp: max(0, p.latest - p.next_offset) for tp, p in partitions.items() if p.latest is not None}
        source_rows = sum(p.rows for p in partitions.values())
        source_seconds = sum(p.seconds for p in partitions.values())
        topics = sorted({topic for topic, _ in partitions})
        sources.append({
            "description": f"KafkaV2[Subscribe[{','.join(topics)}]]",
            "startOffset": _per_topic({tp: p.interval_start for tp, p in partitions.items()}),
            "endOffset": _per_topic({tp: p.next_offset for tp, p in partitions.items()}),
            "latestOffset": _per_topic({tp: p.latest for tp, p in partitions.items()}),
            "numInputRows": source_rows,
            "inputRowsPerSecond": _rate(source_rows, elapsed),
            "processedRowsPerSecond": _rate(source_rows, source_seconds),
            "lag": _per_topic(lag),
            "metrics": {
                "minOffsetsBehindLatest": str(min(lag.values())) if lag else None,
                "avgOffsetsBehindLatest": str(round(sum(lag.values()) / len(lag), 1)) if lag else None,
                "maxOffsetsBehindLatest": str(max(lag.values())) if lag else None,
            },
            "watermark": {topic: {str(p): iso_utc_micros(state.watermark) for (t, p), state in sorted(partitions.items())
                                  if t == topic} for topic in topics},
        })
    return {
        "id": query_id,
        "runId": run_id,
        "name": name,
        "timestamp": _now_iso(),
        "batchId": batch_id,
        "numInputRows": interval.input_rows,
        "inputRowsPerSecond": _rate(interval.input_rows, elapsed),
        "processedRowsPerSecond": _rate(interval.input_rows, busy_seconds),
        "durationMs": {"getBatch": get_batch_ms, "addBatch": add_batch_ms, "triggerExecution": trigger_ms,
                       "maxBundle": int(round(interval.max_read_seconds * 1000)), "bundles": interval.read_calls},
        "eventTime": event_time,
        "lateRows": interval.late_rows,
        "deadLetterRows": interval.dead_letters,
        "totalInputRows": snapshot["totals"]["input"],
        "totalLateRows": snapshot["totals"]["late"],
        "totalDeadLetterRows": snapshot["totals"]["dead"],
        "windowAccounting": _window_accounting(snapshot["totals"]),
        "sources": sources,
        "sinks": [{"description": name_, "numOutputRows": s.rows, "errors": s.errors,
                   "totalOutputRows": s.total_rows, "totalErrors": s.total_errors}
                  for name_, s in sorted(sinks.items())],
    }


def _window_accounting(totals: Dict[str, int]) -> Dict[str, Any]:
    """Where the windowed queries' valid hits went: into their windows, counted late, and in final windows (final
    pane counts over the windows per hit). With every window closed, hitsInFinalWindows equals hitsIntoWindows;
    less means hits were lost between the pre-aggregation and the windows' Combine."""
    into = totals["window_hits"] - totals["late"]
    slots, final = totals["window_slots"], totals["final_window_slots"]
    return {"hitsIntoWindows": into, "lateHits": totals["late"],
            "hitsInFinalWindows": round(final * into / slots, 1) if slots else 0,
            "windowSlots": slots, "finalWindowSlots": final}
