"""The blog's other streams: a TCP socket and a directory of JSON-lines files, through the same pipeline."""
import os
import socket
import threading
import time
import uuid

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from pipelines.blog import build_pipeline
from tests.collect import CollectFn, collected


def _hits(n: int, zipcodes=("10001", "94107", "60601")) -> list:
    return [orjson.dumps({"hittime": 1795500000000 + i * 1000, "zipcode": zipcodes[i % len(zipcodes)]})
            for i in range(n)]


def _run(source_args: list, streaming: bool, name: str, wait: bool = True):
    trigger = "processing-time=1s" if streaming else "available-now"
    options = PipelineOptions(source_args + [f"--trigger={trigger}", "--sink=zip_counts=console:update"]
                              + runners.pipeline_args("prism", streaming=streaming))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_counts:update"] | beam.ParDo(CollectFn(name))
    outputs["dead_letter"] | "CollectDead" >> beam.ParDo(CollectFn(name + "-dead"))
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


def _latest(name: str) -> dict:
    latest = {}
    for _, row in collected(name):
        latest[row.zipcode] = max(latest.get(row.zipcode, 0), row.count)
    return latest


def test_socket_source_counts_every_line_until_the_peer_closes():
    lines = _hits(300) + [b"not json"]
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            for i, line in enumerate(lines):
                conn.sendall(line + b"\n")
                if i % 100 == 0:
                    time.sleep(0.3)  # arrive over several reads
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    name = uuid.uuid4().hex
    _run(["--source=socket", f"--source-path=127.0.0.1:{port}"], streaming=True, name=name)
    assert _latest(name) == {"10001": 100, "94107": 100, "60601": 100}
    assert len(collected(name + "-dead")) == 1


def test_directory_source_bounded_and_new_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_bytes(b"\n".join(_hits(30)) + b"\n")
    (folder / "b.json").write_bytes(b"\n".join(_hits(9)) + b"\n{broken\n")
    name = uuid.uuid4().hex
    _run(["--source=directory", f"--source-path={folder}"], streaming=False, name=name)
    assert _latest(name) == {"10001": 13, "94107": 13, "60601": 13}
    assert len(collected(name + "-dead")) == 1

    live = f"live-{uuid.uuid4().hex}"
    result = _run(["--source=directory", f"--source-path={folder}"], streaming=True, name=live, wait=False)
    try:
        time.sleep(4)
        staged = tmp_path / "c.tmp"
        staged.write_bytes(b"\n".join(_hits(6)) + b"\n")
        os.rename(staged, folder / "c.json")  # atomic arrival, as a file source expects
        deadline = time.time() + 30
        while _latest(live) != {"10001": 15, "94107": 15, "60601": 15} and time.time() < deadline:
            time.sleep(0.5)
    finally:
        result.cancel()
    assert _latest(live) == {"10001": 15, "94107": 15, "60601": 15}
