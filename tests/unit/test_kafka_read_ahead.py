"""The read's consumers bound their read-ahead; a user's kafka option still wins, and other clients keep
librdkafka's defaults (the benchmark's raw loop among them)."""
from transforms.kafka_source import KafkaSourceConfig


def test_the_read_ahead_is_bounded_by_default():
    config = KafkaSourceConfig(bootstrap_servers="127.0.0.1:9092", subscribe=("hits",))
    reader = config.reader_config()
    assert reader["queued.max.messages.kbytes"] == 1024 and reader["fetch.queue.backoff.ms"] == 10
    assert {k: v for k, v in reader.items() if k in config.consumer_config()} == config.consumer_config()
    assert "queued.max.messages.kbytes" not in config.consumer_config()


def test_a_kafka_option_overrides_the_read_ahead():
    config = KafkaSourceConfig(bootstrap_servers="127.0.0.1:9092", subscribe=("hits",),
                               kafka_options={"queued.max.messages.kbytes": "65536"})
    assert config.reader_config()["queued.max.messages.kbytes"] == "65536"
