"""`hitstream run` fails before starting anything, with a message that says what to change."""
import pytest

from pipelines.blog import run


def _fails_with(argv) -> str:
    with pytest.raises(SystemExit) as raised:
        run(argv)
    return str(raised.value)


def test_unreachable_broker():
    message = _fails_with(["--bootstrap-servers=127.0.0.1:1", "--sink=zip_counts=console"])
    assert "Kafka broker at 127.0.0.1:1 is unreachable" in message and "hitstream up" in message


def test_unreachable_database_masks_the_password():
    message = _fails_with(["--bootstrap-servers=127.0.0.1:1", "--source=directory", "--source-path=/tmp",
                           "--sink=zip_counts=jdbc:complete", "--jdbc-url=mysql+pymysql://u:s3cret@127.0.0.1:1/db"])
    assert "database at mysql+pymysql://u:***@127.0.0.1:1/db is unreachable" in message
    assert "s3cret" not in message


def test_missing_topic(kafka_bootstrap):
    message = _fails_with([f"--bootstrap-servers={kafka_bootstrap}", "--topic=hitstream-no-such-topic",
                           "--sink=zip_counts=console"])
    assert "Kafka topic(s) hitstream-no-such-topic do not exist" in message and "hitstream produce" in message


def test_unwritable_parquet_path():
    message = _fails_with(["--source=directory", "--source-path=/tmp", "--sink=hits=parquet",
                           "--parquet-path=/proc/hitstream-cannot-write"])
    assert "--parquet-path /proc/hitstream-cannot-write is not writable" in message
    # A sink's own path is checked, not the job-wide one.
    message = _fails_with(["--source=directory", "--source-path=/tmp", "--parquet-path=/tmp/hitstream-fine",
                           "--sink=hits=parquet,path=/proc/hitstream-cannot-write"])
    assert "the path= of --sink hits=parquet /proc/hitstream-cannot-write is not writable" in message


def test_mode_the_query_forbids(capsys):
    assert run(["--sink=zip_counts=console:append"]) == 2
    assert "Append output mode not supported" in capsys.readouterr().err
