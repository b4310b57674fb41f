"""Versions of the things the local stack fetches.

BEAM_VERSION has one source of truth, the apache-beam pin in setup.py. It is read from
the installed distribution rather than from setup.py's text because the Prism binary and
the Beam jars must match the SDK that actually talks to them; scripts/setup rebuilds the
venv whenever setup.py changes, so the two agree.
"""
from importlib import metadata

BEAM_VERSION = metadata.version("apache-beam")

# Newest Kafka whose kafka_2.13 jar and dependencies resolve from Maven Central here.
KAFKA_VERSION = "4.3.1"

# FlinkRunner's default --flink_version in Beam 2.77; names the Flink job-server jar.
FLINK_VERSION = "2.2"
