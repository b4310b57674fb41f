"""hitstream: the blog's Kafka -> Structured Streaming system, rebuilt as an Apache Beam portable pipeline."""
from setuptools import find_packages, setup

# Versions seen working together on Python 3.11 (see README, "Versions").
BEAM_VERSION = "2.77.0"

setup(
    name="hitstream",
    version="0.1.0",
    description="Real-time ISP-hit counts from Kafka on Apache Beam: the Structured Streaming blog, rebuilt.",
    python_requires=">=3.10",
    packages=find_packages(include=["hitstream*", "pipelines*", "transforms*", "runners*", "stack*"]),
    package_data={"stack": ["*.xml", "*.patch"], "hitstream": ["dashboard/*"]},
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "confluent-kafka==2.16.1",
        "pyarrow==25.0.1",
        "duckdb==2.0.0",
        "SQLAlchemy==2.1.9",
        "PyMySQL==1.2.4",
        "orjson==3.13.0",
        "rich==15.0.0",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "pytest-timeout==2.4.0", "selenium==4.51.0"],
        # bench/spark_blog.py and tests/integration/test_spark_parity.py: the seed's own system. 4.2.0 is the newest
        # pyspark whose spark-sql-kafka-0-10_2.13 jar Maven Central serves (4.2.1 and 4.3.0 are not there).
        "spark": ["pyspark==4.2.0"],
        # runners/prism_cluster.py: the workers' pip builds the staged sdist with this venv's setuptools, which needs
        # wheel for bdist_wheel (stack/python_worker.py).
        "worker": ["wheel==0.48.0"],
        "bench": ["matplotlib==3.10.7", "py-spy==0.4.3"],  # bench/blog.py's chart, bench/profile.py's sampler
    },
    entry_points={"console_scripts": ["hitstream=hitstream.cli:entry"]},
)
