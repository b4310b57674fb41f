"""hitstream's row types as Arrow tables: one definition of column types for the Parquet and memory sinks.

The JDBC sink declares its SQL tables in `jdbc.py`; Arrow is the common currency of pyarrow (Parquet) and DuckDB
(memory), so both build their columns here. Timestamps are microseconds in UTC, as Spark writes them.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Type

import pyarrow as pa

from transforms.rows import DeadLetter, Hit, IspCount, KafkaRecord, WindowCount, ZipCount

_UTC_MICROS = pa.timestamp("us", tz="UTC")
_HEADERS = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))  # Spark's headers column

SCHEMAS: Dict[type, pa.Schema] = {
    Hit: pa.schema([
        ("hittime", _UTC_MICROS), ("zipcode", pa.string()), ("isp", pa.string()), ("ip", pa.string()),
        ("city", pa.string()), ("state", pa.string()), ("country", pa.string()), ("user_id", pa.string()),
        ("url", pa.string()), ("day", pa.string()), ("topic", pa.string()), ("partition", pa.int32()),
        ("offset", pa.int64()), ("kafka_timestamp", pa.int64()), ("late", pa.bool_())]),
    DeadLetter: pa.schema([
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()), ("kafka_timestamp", pa.int64()),
        ("key", pa.binary()), ("value", pa.binary()), ("error", pa.string()), ("step", pa.string()),
        ("headers", _HEADERS)]),
    ZipCount: pa.schema([("zipcode", pa.string()), ("count", pa.int64())]),
    IspCount: pa.schema([("isp", pa.string()), ("count", pa.int64())]),
    WindowCount: pa.schema([
        ("window_start", _UTC_MICROS), ("window_end", _UTC_MICROS), ("zipcode", pa.string()),
        ("count", pa.int64())]),
    KafkaRecord: pa.schema([
        ("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()), ("partition", pa.int32()),
        ("offset", pa.int64()), ("timestamp", pa.int64()), ("timestampType", pa.int32()),
        ("headers", _HEADERS), ("late", pa.bool_())]),
}


def schema_of(row_type: Type[tuple], sample: Optional[tuple] = None) -> pa.Schema:
    """The Arrow schema of a row type; other NamedTuples are inferred from a sample row."""
    schema = SCHEMAS.get(row_type)
    if schema is not None:
        return schema
    if sample is None:
        raise TypeError(f"no Arrow schema for {row_type.__name__} and no row to infer one from")
    return pa.Table.from_pylist([sample._asdict()]).schema


def to_arrow(rows: Sequence[tuple], schema: Optional[pa.Schema] = None) -> pa.Table:
    """NamedTuple rows (all of one type) -> an Arrow table, column by column (no per-row dicts)."""
    if not rows:
        if schema is None:
            raise ValueError("cannot build an Arrow table from no rows without a schema")
        return schema.empty_table()
    first = rows[0]
    schema = schema or schema_of(type(first), first)
    columns = list(zip(*rows))
    arrays = []
    for field, values in zip(schema, columns):
        if field.name == "headers":
            values = [None if h is None else [{"key": k, "value": v} for k, v in h] for h in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)

