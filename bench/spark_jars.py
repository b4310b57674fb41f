"""The Kafka source and sink jars for pyspark, fetched from Maven Central with `mvn`.

pyspark's wheel holds Spark itself but not `spark-sql-kafka-0-10`. Spark's usual way in, `spark.jars.packages`
(Ivy at session start), is not used: every session would resolve again, and the resolution pulls in copies of jars
the wheel already has (hadoop-client-runtime, scala-library, slf4j, snappy, lz4). Instead `mvn
dependency:copy-dependencies` puts the connector and only what the wheel lacks (the Kafka token provider,
kafka-clients and commons-pool2) under ~/.cache/hitstream/tools/spark-kafka/<version>/ once, and the session gets
them through `spark.jars`.

    python -m bench.spark_jars        # fetch (idempotent) and print the jar paths

The Spark version is the installed pyspark's (the `spark` extra pins it); the connector must be the same version.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from stack import paths

SCALA = "2.13"
# Jars the pyspark wheel already ships: leave them out so the classpath holds one copy of each.
_PROVIDED_BY_PYSPARK = (
    ("org.apache.hadoop", "*"),
    ("org.scala-lang", "*"),
    ("org.scala-lang.modules", "*"),
    ("org.slf4j", "*"),
    ("org.xerial.snappy", "*"),
    ("at.yawk.lz4", "*"),
    ("org.lz4", "*"),
    ("com.google.code.findbugs", "*"),
    ("org.apache.spark", f"spark-tags_{SCALA}"),
)

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hitstream.bench</groupId>
  <artifactId>spark-kafka-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.spark</groupId>
      <artifactId>spark-sql-kafka-0-10_{scala}</artifactId>
      <version>{version}</version>
      <exclusions>
{exclusions}
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""


def spark_version() -> str:
    import pyspark  # the `spark` extra; a missing pyspark is an error here, not a skip

    return pyspark.__version__


def jar_dir(version: str | None = None) -> Path:
    return paths.tool_dir("spark-kafka", version or spark_version())


def pom_text(version: str) -> str:
    exclusions = "\n".join(
        f"        <exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>"
        for g, a in _PROVIDED_BY_PYSPARK)
    return _POM.format(scala=SCALA, version=version, exclusions=exclusions)


def fetch(version: str | None = None, timeout: float = 600) -> list[Path]:
    """The connector's jars for `version` (default: the installed pyspark's), fetched once into the cache."""
    version = version or spark_version()
    target = jar_dir(version)
    if not (target / ".complete").exists():
        with tempfile.TemporaryDirectory(prefix="hitstream-spark-pom-") as work:
            pom = Path(work) / "pom.xml"
            pom.write_text(pom_text(version))
            staging = Path(work) / "jars"
            result = subprocess.run(
                ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                raise RuntimeError(f"mvn could not fetch org.apache.spark:spark-sql-kafka-0-10_{SCALA}:{version}:\n"
                                   f"{result.stdout[-4000:]}{result.stderr[-2000:]}")
            shutil.copy(pom, staging / "pom.xml")
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(staging), target)  # whole directory or nothing
        (target / ".complete").touch()
    jars = sorted(target.glob("*.jar"))
    if not any(j.name.startswith(f"spark-sql-kafka-0-10_{SCALA}-") for j in jars):
        raise RuntimeError(f"{target} holds no spark-sql-kafka jar: remove it and fetch again")
    return jars


def spark_jars_conf(version: str | None = None) -> str:
    """The value for `spark.jars`: the fetched jars, comma-separated."""
    return ",".join(str(j) for j in fetch(version))


if __name__ == "__main__":
    for jar in fetch():
        print(jar)
