"""python -m stack up|down|status: start, stop or report the local stack.

up and down print a short summary; status prints the full report as JSON. The exit code
is 0 when Kafka, MariaDB and Prism are all up (for down: always).
"""
import argparse
import json
import logging
import sys

import stack


def _summary(report: dict) -> str:
    kafka, mariadb, prism, worker = report["kafka"], report["mariadb"], report["prism"], report["python_worker"]
    java = report["java_kafkaio"]
    jars = ", ".join(f"{name} {record['status']}" for name, record in report["beam_jars"].items())
    return "\n".join([
        f"kafka {kafka['version']}: {'up' if kafka['healthy'] else 'DOWN'} at {kafka['bootstrap']}",
        f"mariadb: {'up' if mariadb['healthy'] else 'DOWN'} at {mariadb['url']}",
        f"prism {report['beam_version']}: {'built' if prism['built'] else 'MISSING'} at {prism['path']}",
        f"python boot (prism-cluster workers): {'built' if worker['built'] else 'MISSING'} at {worker['boot']}",
        f"java kafkaio {java['java_beam_version']} (--kafka-io java, fetched by its first job): "
        f"classpath {'fetched' if java['fetched'] else 'not fetched'}, boot {'built' if java['built'] else 'not built'}",
        f"beam jars (optional): {jars or 'not checked'}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "up":
        stack.up()
    elif args.command == "down":
        stack.down()
    report = stack.status()
    print(json.dumps(report, indent=2) if args.command == "status" else _summary(report))
    return 0 if report["ok"] or args.command == "down" else 1


if __name__ == "__main__":
    sys.exit(main())
