"""python -m stack up|down|status"""
import argparse
import json
import logging
import sys

import stack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "up":
        stack.up()
    elif args.command == "down":
        stack.down()
    report = stack.status()
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] or args.command == "down" else 1


if __name__ == "__main__":
    sys.exit(main())
