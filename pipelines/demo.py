"""The main job end to end on simulated data: what `make demo` runs.

Each step is one `pes-ml` command, run as a user would run it, so the demo
proves the CLI works as documented.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args: str) -> None:
    command = [str(BIN / "pes-ml"), *args]
    print("\n$ " + shlex.join(["pes-ml", *args]), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="pipelines/conf/base/pes.yaml")
    parser.add_argument("--accounts", default="2000")
    args = parser.parse_args()
    run("simulate", "--out", "data/sim", "--accounts", args.accounts)
    run("validate", "--config", args.config)


if __name__ == "__main__":
    main()
