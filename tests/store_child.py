"""A separate (sync) process using a token store, for the async store tests.

``python tests/store_child.py SPEC KEY hold``: takes KEY's re-login lock, prints ``held``, waits
for a line on stdin, releases it and prints ``released``.
``python tests/store_child.py SPEC KEY try SECONDS``: prints ``got`` or ``busy``.
``python tests/store_child.py SPEC KEY load``: prints the stored generation (0: none).
"""

from __future__ import annotations

import sys

from session_fsm.stores import open_store


def main(spec: str, key: str, command: str, *args: str) -> None:
    store = open_store(spec)
    if command == "hold":
        with store.lock(key, 10.0) as got:
            print("held" if got else "busy", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    elif command == "try":
        with store.lock(key, float(args[0])) as got:
            print("got" if got else "busy", flush=True)
    elif command == "load":
        stored = store.load(key)
        print(0 if stored is None else stored.generation, flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
