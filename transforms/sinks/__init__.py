"""The blog's sinks, one module each, on one base (`base.py`): console, memory, parquet, jdbc, kafka, foreach.

Every sink takes rows (update/append) and Snapshots (complete) alike. The pipeline builds them from explicit
settings, one `--sink QUERY=KIND[:MODE]` choice at a time (`pipelines/sinks.py`).
"""
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter
from transforms.sinks.console import WriteToConsole
from transforms.sinks.foreach import ForeachWriter, WriteToForeach, WriteToForeachBatch, foreach_batch
from transforms.sinks.jdbc import WriteToJdbc
from transforms.sinks.kafka import WriteDeadLettersToKafka, WriteToKafka
from transforms.sinks.memory import WriteToMemory
from transforms.sinks.parquet import WriteDeadLettersToParquet, WriteToParquet

__all__ = [
    "ForeachWriter", "RetryPolicy", "Sink", "SinkWriter", "WriteDeadLettersToKafka", "WriteDeadLettersToParquet",
    "WriteToConsole", "WriteToForeach", "WriteToForeachBatch", "WriteToJdbc", "WriteToKafka", "WriteToMemory",
    "WriteToParquet", "foreach_batch",
]
