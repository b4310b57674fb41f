"""The blog's queries by name: what kind of query each is and which rows it emits. The one registry that the
`--sink` flags, the sinks' table layouts and the live results read."""
from __future__ import annotations

import dataclasses
from typing import Dict

from transforms.output_modes import QueryKind
from transforms.rows import DeadLetter, Hit, IspCount, WindowCount, ZipCount

DEAD_LETTER = "dead_letter"  # the parse's second output: a stream that sinks can take like a query's


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    kind: QueryKind
    row_type: type


QUERIES: Dict[str, Query] = {query.name: query for query in (
    Query("hits", QueryKind.PROJECTION, Hit),
    Query("zip_counts", QueryKind.AGGREGATION, ZipCount),
    Query("isp_counts", QueryKind.AGGREGATION, IspCount),
    Query("zip_window_counts", QueryKind.WINDOWED_AGGREGATION, WindowCount),
)}

# The rows of each query and of the dead-letter stream, for sinks that lay out a table.
ROW_TYPES: Dict[str, type] = {**{name: query.row_type for name, query in QUERIES.items()}, DEAD_LETTER: DeadLetter}

# The aggregations' row types -> their query, for the live results.
AGGREGATION_OF_ROW: Dict[type, str] = {query.row_type: name for name, query in QUERIES.items()
                                       if query.kind is not QueryKind.PROJECTION}
