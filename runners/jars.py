"""Beam's Java jars for the presets and the Java KafkaIO path: found where the stack fetched them, or a
RunnerUnavailable that says exactly why not."""
from runners import RunnerUnavailable
from stack import beam_jars
from stack.java_kafkaio import JavaExpansionService


def java_jar(name: str) -> str:
    """Path of one of Beam's jars (a key of stack.beam_jars.JARS)."""
    path = beam_jars.jar_path(name)
    if path:
        return path
    raise RunnerUnavailable(beam_jars.missing_reason(name))


def java_kafka_expansion_service():
    """The expansion service of `--kafka-io java` (see stack.java_kafkaio): started for the expansion only."""
    return JavaExpansionService()
