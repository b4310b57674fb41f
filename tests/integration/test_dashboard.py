"""The dashboard and the progress records on real jobs.

* A streaming job on Prism with `--dashboard` (memory sinks for zip_counts and zip_window_counts, complete mode),
  driven in headless Chromium (Debian's chromium + chromedriver, through selenium): the charts change while hits are
  produced, the SQL box answers with the generator's reference once the counts settle and refuses COPY, ATTACH,
  file reads and writes. The screenshot goes to artifacts/dashboard.png.
* `/sql` itself refuses the same statements, and the server takes no POST.
* A bounded (available-now) run: numInputRows summed over the progress records equals the records produced, on
  Prism and on the DirectRunner.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hitstream import dashboard, progress, server
from hitstream.generator import ProduceSpec, produce
from hitstream.job import observe_job
from transforms import telemetry
from transforms.rows import WindowCount, ZipCount
from transforms.sinks.memory_store import STORE

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The blog's window: 10 minutes every 5, so each on-time hit counts in exactly two windows.
WINDOWS_PER_HIT = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, timeout: float = 10.0):
    """(status, parsed JSON or text) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            body, status, kind = response.read(), response.status, response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        body, status, kind = error.read(), error.code, error.headers.get("Content-Type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body.decode()


def _wait_for(what: str, check, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def _job(argv: list):
    """`hitstream run ARGV` in a process of its own; stopped with SIGTERM (a clean cancel) at the end."""
    log = tempfile.NamedTemporaryFile(prefix="dashboard-job-", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HITSTREAM_PROGRESS": "0"}
    child = subprocess.Popen([sys.executable, "-m", "hitstream.cli", "run", *argv], cwd=REPO, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child, Path(log.name)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)


@contextlib.contextmanager
def _chromium(width: int = 1440, height: int = 1800):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _drawn(driver, selector: str) -> dict:
    """{data-key: data-value} of the chart elements matching `selector`, read in one go: the page redraws its
    charts every second, so element handles go stale."""
    pairs = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => [e.dataset.key, Number(e.dataset.value)])",
        selector)
    return {key: int(value) for key, value in pairs}


def _bars(driver) -> dict:
    """The zip_counts bar chart as drawn: {zipcode: count}."""
    return _drawn(driver, "#chart-zip g.bar")


def _polls(driver) -> int:
    return int(driver.find_element("tag name", "body").get_attribute("data-polls") or 0)


def _run_sql(driver, query: str, timeout: float = 15.0):
    """Type `query` in the SQL box, run it; ("ok", columns, rows) or ("error", message, None)."""
    box = driver.find_element("id", "sql-input")
    box.clear()
    box.send_keys(query)
    driver.find_element("id", "sql-run").click()
    output = driver.find_element("id", "sql-output")
    state = _wait_for(f"the SQL box to answer {query!r}",
                      lambda: output.get_attribute("data-state") in ("ok", "error") and output.get_attribute(
                          "data-state"), timeout)
    if state == "error":
        return "error", driver.find_element("id", "sql-error").text, None
    table = driver.find_element("id", "sql-result")
    columns = [th.text for th in table.find_elements("css selector", "thead th")]
    rows = [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in table.find_elements("css selector", "tbody tr")]
    return "ok", columns, rows


REFUSED = {
    "copy": "COPY (SELECT * FROM zip_counts) TO '/tmp/hitstream-dashboard-leak.csv'",
    "attach": "ATTACH '/tmp/hitstream-dashboard-attached.db' AS other",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "insert": "INSERT INTO zip_counts VALUES ('00000', 1)",
    "delete": "DELETE FROM zip_counts",
    "create": "CREATE TABLE stolen AS SELECT * FROM zip_counts",
    "drop": "DROP TABLE zip_counts",
}


@pytest.mark.timeout(240)
def test_dashboard_charts_update_live_and_sql_box_matches_the_reference(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="dashboard")
    port = _free_port()
    argv = ["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
            "--trigger=processing-time=1s", f"--group-id=g-{topic}", "--starting-offsets=earliest",
            "--sink=zip_counts=memory:complete", "--sink=zip_window_counts=memory:complete",
            "--dashboard", f"--dashboard-port={port}", "--run-seconds=200"]
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=3000, rate=250, partitions=3,
                       zipcodes=8, skew=0.8, malformed_share=0.02, seed=7, keep_events=False)
    reports = []
    producer = threading.Thread(target=lambda: reports.append(produce(spec)), name="dashboard-producer")
    with _job(argv) as (job, log), _chromium() as driver:
        _wait_for("the dashboard to answer", lambda: _get(port, "/status")[0] == 200, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        assert driver.title == "hitstream dashboard"
        _wait_for("the page to poll", lambda: _polls(driver) >= 1, 15)
        # The job is up once its memory tables exist (Prism has started the workers and the sinks).
        producer.start()
        first = _wait_for("bars in the zipcode chart", lambda: _bars(driver), 60)
        read_at = time.monotonic()
        assert producer.is_alive(), "the producer finished before the chart showed anything; produce more slowly"
        second = _wait_for("the zipcode bars to grow", lambda: (
            sum(_bars(driver).values()) > sum(first.values()) and _bars(driver)), 15)
        assert producer.is_alive(), f"the bars did not change while hits were produced: {first} -> {second}"
        assert time.monotonic() - read_at < 15
        # The other live charts drew from the progress records meanwhile.
        assert driver.find_elements("css selector", "#chart-rates path.series[data-series='input rows/s']")
        assert len(driver.find_elements("css selector", "#chart-lag g.bar")) == 3
        assert driver.find_elements("css selector", "#chart-duration g.bar")
        assert driver.find_elements("css selector", "#chart-windows figure.pie path.slice, "
                                                    "#chart-windows figure.pie circle.slice")
        rates = [p["inputRowsPerSecond"] for p in _get(port, "/progress/recent")[1]["progress"]]
        assert max(rates) > 0
        assert driver.find_element("id", "tile-input").text not in ("", "–")
        assert driver.find_element("id", "tile-windows").text.count(" / ") == 2  # into / late / in final windows

        producer.join(timeout=60)
        report = reports[0]
        reference = dict(report.zip_counts)
        # Counts settle: the chart (from the sinks' writes) and the progress totals reach the reference.
        _wait_for("the bars to equal the reference", lambda: _bars(driver) == reference, 40)
        last = _wait_for("every record in the progress totals",
                         lambda: (_get(port, "/progress")[1] or {}).get("totalInputRows") == report.produced
                         and _get(port, "/progress")[1], 20)
        assert last["totalDeadLetterRows"] == report.malformed
        source = last["sources"][0]
        assert sum(source["endOffset"][topic].values()) == report.produced
        _wait_for("zero lag", lambda: _get(port, "/progress")[1]["sources"][0]["lag"][topic]
                  == {"0": 0, "1": 0, "2": 0}, 10)

        status, columns, rows = _run_sql(driver, "SELECT zipcode, count FROM zip_counts ORDER BY zipcode")
        assert status == "ok" and columns == ["zipcode", "count"]
        assert {zipcode: int(count) for zipcode, count in rows} == reference
        status, columns, rows = _run_sql(driver, "SELECT sum(count) AS hits, count(DISTINCT zipcode) AS zips "
                                                 "FROM zip_window_counts")
        assert status == "ok" and rows == [[str(WINDOWS_PER_HIT * report.well_formed), str(len(reference))]]
        # The pies show the same windows.
        pie_total = sum(driver.execute_script(
            "return [...document.querySelectorAll('#chart-windows .slice')].map(e => Number(e.dataset.value))"))
        assert 0 < pie_total <= WINDOWS_PER_HIT * report.well_formed

        for name, statement in REFUSED.items():
            status, message, _ = _run_sql(driver, statement)
            assert status == "error" and message, f"the SQL box ran {name}: {statement}"
        status, _, rows = _run_sql(driver, "SELECT count(*), sum(count) FROM zip_counts")
        assert rows == [[str(len(reference)), str(report.well_formed)]], "a refused statement changed the table"
        assert not Path("/tmp/hitstream-dashboard-leak.csv").exists()

        _run_sql(driver, "SELECT zipcode, count FROM zip_counts ORDER BY count DESC LIMIT 5")
        ARTIFACTS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, max(1200, height + 40))
        time.sleep(1.2)  # one more poll at the new width
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert job.poll() is None, log.read_text()[-3000:]


@pytest.fixture()
def sql_server():
    """The dashboard's server in this process, with a memory table zip_counts_dash_<n>."""
    port = _free_port()
    table = f"zip_counts_dash_{port}"
    STORE.replace(table, [ZipCount("94107", 3), ZipCount("94016", 5)])
    query = progress.StreamingQuery(name="sql-test", registry=telemetry.ProgressRegistry())
    dashboard.serve(query, port)
    yield port, table
    server.stop(port)
    STORE.drop(table)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sql_endpoint_refuses_files_attach_and_writes(sql_server, name):
    port, table = sql_server
    statement = REFUSED[name].replace("zip_counts", table)
    status, body = _get(port, "/sql?" + urllib.parse.urlencode({"q": statement}))
    assert status == 400 and body["error"], body
    status, body = _get(port, "/sql?" + urllib.parse.urlencode({"q": f"SELECT zipcode, count FROM {table} "
                                                                     f"ORDER BY zipcode"}))
    assert status == 200 and body["rows"] == [["94016", 5], ["94107", 3]]


def test_sql_endpoint_caps_rows_and_takes_no_post(sql_server):
    port, table = sql_server
    status, body = _get(port, "/sql?" + urllib.parse.urlencode({"q": "SELECT * FROM range(50000)",
                                                                "limit": 100000}))
    assert status == 200 and len(body["rows"]) == server.MAX_ROW_LIMIT and body["truncated"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/sql?q=SELECT+1", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 501


def test_dashboard_is_served_from_the_package_with_no_outside_urls(sql_server):
    port, _ = sql_server
    status, page = _get(port, "/")
    assert status == 200 and "<title>hitstream dashboard</title>" in page
    for name in ("index.html", "app.js", "style.css"):
        status, text = _get(port, f"/{name}")
        assert status == 200 and text == (dashboard.STATIC_DIR / name).read_text()
        # No CDN, no web font, no remote script: the only URL is SVG's namespace name, which is never fetched.
        assert set(re.findall(r"\b(?:https?:)?//[\w.-]+", text)) <= {"http://www.w3.org"}, name
    status, body = _get(port, "/progress/recent")
    assert status == 200 and body == {"progress": []}
    assert _get(port, "/status")[1]["message"] == "Initializing sources"


def test_sql_box_starts_on_a_table_the_job_has():
    """A job whose only memory table is zip_window_counts: the SQL box's first query is over that table, and it
    runs (it used to name zip_counts, which did not exist)."""
    for name in STORE.tables():  # what earlier tests of this process left
        STORE.drop(name)
    start = datetime.datetime(2026, 3, 15, 22, 2, tzinfo=datetime.timezone.utc)
    STORE.replace("zip_window_counts", [WindowCount(start, start + datetime.timedelta(minutes=10), "94107", 4)])
    port = _free_port()
    dashboard.serve(progress.StreamingQuery(name="sql-start", registry=telemetry.ProgressRegistry()), port)
    try:
        with _chromium() as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            box = driver.find_element("id", "sql-input")
            query = _wait_for("the SQL box to follow the job's tables",
                              lambda: "zip_window_counts" in box.get_attribute("value") and box.get_attribute("value"),
                              30)
            assert "zip_counts " not in query
            driver.find_element("id", "sql-run").click()
            output = driver.find_element("id", "sql-output")
            assert _wait_for("the query to answer", lambda: output.get_attribute("data-state") in ("ok", "error")
                             and output.get_attribute("data-state"), 15) == "ok", \
                driver.find_element("id", "sql-error").text
            rows = driver.find_elements("css selector", "#sql-result tbody tr")
            assert [td.text for td in rows[0].find_elements("tag name", "td")][-2:] == ["94107", "4"]
    finally:
        server.stop(port)
        STORE.drop("zip_window_counts")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_num_input_rows_summed_over_a_bounded_run_equals_records_produced(kafka_bootstrap, topic_factory, runner):
    from confluent_kafka import Consumer, TopicPartition
    from pipelines import blog
    topic = topic_factory(partitions=3, prefix="progress")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=5000, partitions=3,
                                 zipcodes=10, malformed_share=0.03, late_share=0.05, late_by_seconds=3600,
                                 seed=11, keep_events=False))
    records = []
    queries = []

    class Listener:
        def on_query_started(self, query):
            queries.append(query)

        def on_query_progress(self, record):
            records.append(record)

    listener = Listener()
    progress.STREAMS.add_listener(listener)
    try:
        code = blog.run(observe=observe_job, argv=["--runner", runner, f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
                         "--trigger=available-now", f"--group-id=g-{topic}", "--starting-offsets=earliest",
                         # update, not complete: complete mode keeps late hits in their windows, as Spark's does
                         "--sink=zip_counts=memory:complete", "--sink=zip_window_counts=memory:update",
                         f"--dashboard-port={_free_port()}"])
    finally:
        progress.STREAMS.remove_listener(listener)
    assert code == 0
    assert [r["batchId"] for r in records] == list(range(len(records)))
    assert sum(r["numInputRows"] for r in records) == report.produced
    assert sum(s["numInputRows"] for r in records for s in r["sources"]) == report.produced
    assert sum(r["deadLetterRows"] for r in records) == report.malformed
    assert sum(r["lateRows"] for r in records) > 0  # an hour late: behind the 10-minute watermark delay
    assert queries[0].last_progress == records[-1] and queries[0].recent_progress == records[-100:]
    assert not queries[0].is_active and queries[0].status["message"] == "Stopped"
    last = records[-1]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{topic}"})
    try:
        ends = {str(p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    finally:
        consumer.close()
    source = last["sources"][0]
    assert source["endOffset"] == {topic: ends} and source["latestOffset"] == {topic: ends}
    assert source["lag"] == {topic: {p: 0 for p in ends}}
    sinks = {s["description"]: s for s in last["sinks"]}
    assert sinks["memory.zip_counts"]["totalOutputRows"] >= 10 and sinks["memory.zip_counts"]["totalErrors"] == 0
    assert last["eventTime"]["watermark"] is not None
    assert set(last) >= {"id", "runId", "name", "timestamp", "batchId", "numInputRows", "inputRowsPerSecond",
                         "processedRowsPerSecond", "durationMs", "eventTime", "sources", "sinks", "lateRows",
                         "deadLetterRows"}
    assert any(r["eventTime"].get("min") for r in records)
    # Window accounting at the end of a bounded run: every valid hit is in its windows or counted late, and every
    # window has closed, so the final windows hold all of those that went in.
    windows = last["windowAccounting"]
    assert windows["lateHits"] == sum(r["lateRows"] for r in records) > 0
    assert windows["hitsIntoWindows"] + windows["lateHits"] == report.produced - report.malformed
    assert windows["hitsInFinalWindows"] == windows["hitsIntoWindows"]
    assert windows["finalWindowSlots"] == windows["windowSlots"] == 2 * windows["hitsIntoWindows"]


def test_dashboard_on_prism_cluster_charts_from_the_kafka_sink_and_the_job_metrics(kafka_bootstrap, topic_factory):
    """Workers in processes of their own: the bars and pies come from the Kafka sink's topic, the rates and lag from
    the job service's metrics (nothing passes through the launcher's memory)."""
    topic = topic_factory(partitions=3, prefix="dashboard-cluster")
    out_topic = topic_factory(partitions=1, prefix="dashboard-cluster-out")
    port = _free_port()
    argv = ["--runner", "prism-cluster", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
            "--trigger=processing-time=1s", f"--group-id=g-{topic}", "--starting-offsets=earliest",
            "--sink=zip_counts=kafka:update", "--sink=zip_window_counts=kafka:update", f"--output-topic={out_topic}",
            "--dashboard", f"--dashboard-port={port}", "--run-seconds=200"]
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, rate=250, partitions=3,
                       zipcodes=8, skew=0.8, malformed_share=0.02, seed=8, keep_events=False)
    reports = []
    producer = threading.Thread(target=lambda: reports.append(produce(spec)), name="dashboard-producer")
    with _job(argv) as (job, log), _chromium() as driver:
        _wait_for("the dashboard to answer", lambda: _get(port, "/status")[0] == 200, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        _wait_for("the page to poll", lambda: _polls(driver) >= 1, 15)
        # The dashboard answers long before the worker process has started (about 20 s): produce once it reads.
        _wait_for("the worker to read the topic's partitions", lambda: len(
            ((_get(port, "/progress")[1] or {}).get("sources") or [{}])[0].get("lag", {}).get(topic, {})) == 3, 120)
        producer.start()
        first = _wait_for("bars in the zipcode chart", lambda: _bars(driver), 90)
        assert producer.is_alive(), "the producer finished before the chart showed anything; produce more slowly"
        second = _wait_for("the zipcode bars to grow", lambda: (
            sum(_bars(driver).values()) > sum(first.values()) and _bars(driver)), 15)
        assert producer.is_alive(), f"the bars did not change while hits were produced: {first} -> {second}"
        producer.join(timeout=60)
        report = reports[0]
        _wait_for("the bars to equal the reference", lambda: _bars(driver) == dict(report.zip_counts), 60)
        last = _wait_for("every record in the progress totals",
                         lambda: (_get(port, "/progress")[1] or {}).get("totalInputRows") == report.produced
                         and _get(port, "/progress")[1], 30)
        assert last["totalDeadLetterRows"] == report.malformed
        _wait_for("zero lag", lambda: _get(port, "/progress")[1]["sources"][0]["lag"][topic]
                  == {"0": 0, "1": 0, "2": 0}, 20)
        assert max(p["inputRowsPerSecond"] for p in _get(port, "/progress/recent")[1]["progress"]) > 0
        assert len(driver.find_elements("css selector", "#chart-lag g.bar")) == 3
        assert driver.find_elements("css selector", "#chart-windows figure.pie path.slice, "
                                                    "#chart-windows figure.pie circle.slice")
        assert job.poll() is None, log.read_text()[-3000:]
