"""`python -m devstack run|up|down` (the Makefile's run, up and down)."""

import argparse
import signal
import sys
from types import FrameType

from devstack.config import StackConfig
from devstack.stack import Stack, StackError, stop_from_state
from devstack.system import MissingProgram


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["run", "up", "down"])
    args = parser.parse_args(argv)
    config = StackConfig.from_env()

    if args.command == "down":
        stopped = stop_from_state(config.data_dir)
        print("stack stopped" if stopped else "no stack was running")
        return 0

    if (config.data_dir / "stack.json").exists():
        # A previous `make up` (or a crashed run) left processes: stop them before starting anew.
        stop_from_state(config.data_dir)

    stack = Stack(config, foreground=args.command == "run")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except (StackError, MissingProgram) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    url = config.public_base_url
    print(
        f"\nThe stack is up: {url}  (API docs: {url}/auth/docs, {url}/users/docs, {url}/private/docs)\n",
        flush=True,
    )
    if args.command == "up":
        print("Stop it with `make down`.")
        return 0
    try:
        return stack.watch()
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
