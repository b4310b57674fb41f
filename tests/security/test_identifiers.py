"""SQL identifiers: a table name is a plain identifier or it is refused, with a message that says what is allowed,
before anything reaches the database."""
import uuid

import pytest
import sqlalchemy as sa

from pipelines import blog
from transforms.sinks.jdbc import WriteToJdbc, validate_identifier
from transforms.sinks.memory import WriteToMemory

HOSTILE = [
    "zip_test`; DROP TABLE zip_test; --",
    "zip_test'; DROP TABLE zip_test; --",
    'zip_test"; DROP TABLE zip_test; --',
    "zip_test;",
    "zip`test",
    "zip'test",
    'zip"test',
    "zip_test\n",  # `re.match` with `$` accepted this one
    "zip_test\nDROP",
    "zip test",
    "zip-test",
    "hitstream.zip_test",
    "1zip",
    "z" * 65,
    "",
    "ｚｉｐ",  # full-width letters: not ASCII
]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_jdbc_table_names_with_quotes_semicolons_or_backticks_are_refused(name):
    with pytest.raises(ValueError) as refused:
        WriteToJdbc("sqlite:///unused.db", name, query="zip_counts")
    message = str(refused.value)
    assert f"table name {name!r} is refused" in message
    assert "letters, digits and _ only" in message
    with pytest.raises(ValueError):
        validate_identifier(name, "column")


@pytest.mark.parametrize("name", ["zip_test", "_x", "Zip_Test_2", "select", "z" * 64])
def test_plain_identifiers_pass(name):
    assert validate_identifier(name) == name


@pytest.mark.parametrize("name", ["zip`counts", "zip_counts\n", "zip;counts", "zip'counts"], ids=repr)
def test_memory_table_names_are_checked_too(name):
    with pytest.raises(ValueError, match="table name"):
        WriteToMemory(name)


def test_hitstream_run_refuses_the_table_before_touching_the_database(mysql_url, tmp_path, capsys):
    canary = f"canary_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {canary} (id INTEGER PRIMARY KEY)"))
    try:
        code = blog.run(["--source=directory", f"--source-path={tmp_path}", "--trigger=available-now",
                         "--sink=zip_counts=jdbc:complete", f"--jdbc-url={mysql_url}",
                         f"--jdbc-table=zip_test`; DROP TABLE {canary}; --"])
        err = capsys.readouterr().err
        assert code == 2
        assert "hitstream run: jdbc sink: table name" in err and "is refused" in err
        assert sa.inspect(engine).has_table(canary)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {canary}"))
        engine.dispose()
