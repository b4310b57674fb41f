"""Credentials: Kafka client settings (SASL_SSL and its secrets) from --kafka-options-file, HITSTREAM_KAFKA_<KEY> or
--kafka-option reach the source's consumer and the sinks' producers unchanged, and the file's and the environment's
secrets stay out of the pipeline options and reprs; the database password comes from the environment or a file.

No SASL broker here: the settings are checked in the dicts handed to confluent-kafka, and real Consumer and
Producer objects are built from them (librdkafka refuses unknown names and bad values)."""
import uuid

import certifi
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, Producer

from pipelines import blog
from pipelines.options import HitstreamOptions, Settings, kafka_client_settings
from pipelines.options import SinkChoice
from pipelines.sinks import SinkSettings, dead_letter_sinks, sink_for
from transforms.sinks.jdbc import mask_url, resolve_url

CLOSED_PORT = "127.0.0.1:1"  # nothing listens: the clients are built, never connected


def _sasl_ssl(password: str) -> dict:
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
            "sasl.password": password, "ssl.ca.location": certifi.where()}


def _options(*args: str) -> PipelineOptions:
    return PipelineOptions([f"--bootstrap-servers={CLOSED_PORT}", "--trigger=available-now",
                            "--dead-letter-topic=dlq", *args])


def _write_properties(path, settings: dict) -> str:
    lines = ["# client.properties, as a Kafka user writes it", ""]
    lines += [f"{key} = {value}" if i % 2 else f"{key}={value}" for i, (key, value) in enumerate(settings.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("route", ["file", "environment", "command line"])
def test_sasl_ssl_settings_reach_the_consumer_and_producers_unchanged(route, tmp_path, monkeypatch):
    password = f"pw-{uuid.uuid4().hex}=;#x"  # `=`, `;` and `#` inside a value are kept
    wanted = _sasl_ssl(password)
    if route == "file":
        options = _options(f"--kafka-options-file={_write_properties(tmp_path / 'kafka.properties', wanted)}")
    elif route == "environment":
        for key, value in wanted.items():
            monkeypatch.setenv("HITSTREAM_KAFKA_" + key.upper().replace(".", "_"), value)
        options = _options()
    else:
        options = _options(*(f"--kafka-option={key}={value}" for key, value in wanted.items()))
    hs = options.view_as(HitstreamOptions)

    config = blog.kafka_source_config(hs, Settings.from_options(hs))
    consumer_config = config.consumer_config()
    sink_settings = SinkSettings.from_options(hs)
    producer_configs = [sink_for(SinkChoice.parse("zip_counts=kafka:update"), sink_settings).make_writer()._config]
    producer_configs += [sink.make_writer()._config for _, sink in dead_letter_sinks(sink_settings)]
    # The default foreach sink's fan-out producer too (it got none of these settings before sinks were built from
    # explicit settings).
    fan_out = sink_for(SinkChoice.parse("zip_counts=foreach:update"), sink_settings).make_writer()
    producer_configs.append(fan_out._writer._kafka._config)
    assert len(producer_configs) == 3
    for client_config in [consumer_config, config.reader_config(), *producer_configs]:
        assert {key: client_config[key] for key in wanted} == wanted
        assert client_config["bootstrap.servers"] == CLOSED_PORT
    Consumer(consumer_config).close()
    for client_config in producer_configs:
        Producer(client_config).flush(0)

    assert password not in repr(config) and "'sasl.password': '***'" in repr(config)
    if route != "command line":  # the file's and the environment's values never enter the pipeline options
        assert password not in str(options.get_all_options(retain_unknown_options=True))
        assert password not in str(hs)


def test_later_sources_win_file_then_environment_then_command_line(tmp_path, monkeypatch):
    path = _write_properties(tmp_path / "kafka.properties",
                             {"sasl.username": "from-file", "sasl.password": "from-file", "client.id": "from-file"})
    monkeypatch.setenv("HITSTREAM_KAFKA_SASL_PASSWORD", "from-env")
    monkeypatch.setenv("HITSTREAM_KAFKA_CLIENT_ID", "from-env")
    hs = _options(f"--kafka-options-file={path}", "--kafka-option=client.id=from-cli").view_as(HitstreamOptions)
    assert dict(kafka_client_settings(hs)) == {"sasl.username": "from-file", "sasl.password": "from-env",
                                              "client.id": "from-cli"}


def test_a_bad_options_file_is_named_without_quoting_its_secret(tmp_path):
    path = tmp_path / "kafka.properties"
    path.write_text("security.protocol=SASL_SSL\nsasl.password hunter2-secret\n")
    with pytest.raises(ValueError) as bad:
        kafka_client_settings(_options(f"--kafka-options-file={path}").view_as(HitstreamOptions))
    assert f"{path}, line 2: write KEY=VALUE" in str(bad.value) and "hunter2" not in str(bad.value)
    with pytest.raises(ValueError, match="cannot read it"):
        kafka_client_settings(_options(f"--kafka-options-file={tmp_path}/missing").view_as(HitstreamOptions))
    with pytest.raises(ValueError) as bad:
        kafka_client_settings(_options("--kafka-option=sasl.password:hunter2").view_as(HitstreamOptions))
    assert "KEY=VALUE" in str(bad.value) and "hunter2" not in str(bad.value)


def test_secrets_on_the_command_line_and_readable_files_are_warned_about(tmp_path, caplog):
    path = tmp_path / "kafka.properties"
    path.write_text("sasl.username=alice\n")
    path.chmod(0o644)
    hs = _options(f"--kafka-options-file={path}", "--kafka-option=sasl.password=hunter2").view_as(HitstreamOptions)
    kafka_client_settings(hs, warn=True)
    assert "can be read by other users; chmod 600" in caplog.text
    assert "--kafka-option sasl.password" in caplog.text and "HITSTREAM_KAFKA_SASL_PASSWORD" in caplog.text
    assert "hunter2" not in caplog.text


def test_db_password_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HITSTREAM_DB_PASSWORD", raising=False)
    secret = tmp_path / "db.password"
    secret.write_text("from-file\n")
    monkeypatch.setenv("HITSTREAM_DB_PASSWORD_FILE", str(secret))
    assert resolve_url("mysql+pymysql://u@h/db").password == "from-file"  # the file's newline is not in it
    assert resolve_url("mysql+pymysql://u:inline@h/db").password == "inline"
    assert resolve_url("sqlite:///x.db").password is None
    monkeypatch.setenv("HITSTREAM_DB_PASSWORD", "from-env")
    assert resolve_url("mysql+pymysql://u@h/db").password == "from-env"
    monkeypatch.delenv("HITSTREAM_DB_PASSWORD")
    monkeypatch.setenv("HITSTREAM_DB_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="HITSTREAM_DB_PASSWORD_FILE=.*missing cannot be read"):
        resolve_url("mysql+pymysql://u@h/db")


def test_a_wrong_db_password_from_a_file_fails_preflight_masked(mysql_url, tmp_path, monkeypatch, caplog):
    from stack import mariadb
    wrong = f"wrong-{uuid.uuid4().hex}"
    secret = tmp_path / "db.password"
    secret.write_text(wrong)
    monkeypatch.delenv("HITSTREAM_DB_PASSWORD", raising=False)
    monkeypatch.setenv("HITSTREAM_DB_PASSWORD_FILE", str(secret))
    url = f"mysql+pymysql://{mariadb.USER}@{mariadb.HOST}:{mariadb.PORT}/{mariadb.DATABASE}"
    with pytest.raises(SystemExit) as failed:
        blog.run(["--source=directory", f"--source-path={tmp_path}", "--trigger=available-now",
                  "--sink=zip_counts=jdbc:complete", f"--jdbc-url={url}"])
    message = str(failed.value)
    assert f"the database at {mask_url(url.replace('@', ':x@', 1))} is unreachable" in message
    assert "Access denied" in message
    assert wrong not in message and wrong not in caplog.text
