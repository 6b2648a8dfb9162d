#!/usr/bin/env python3
"""Concurrency model (c): kcpgo in real OS threads of an unpatched program.

    python examples/model_os_thread.py

Each OS thread has its own gevent hub, and kcpgo objects belong to the thread that created
them (the server's sessions belong to the thread that serves it). A thread that creates its
own sessions just works; using another thread's session raises RuntimeError saying so, instead
of hanging. shutdown() and server_close() may be called from any thread.
"""
import threading

import kcpgo
from kcpgo.server import ThreadingKCPServer
from lineproto import LineEcho, line_client  # noqa: E402  (examples/ is on sys.path)


def main() -> None:
    server = ThreadingKCPServer(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10)
    serving = threading.Thread(target=server.serve_forever, name="kcp-server")
    serving.start()

    printing = threading.Lock()     # one whole line per print, whichever thread finishes first

    def one(name):
        # this thread dials, so the session is this thread's
        with kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10) as s:
            replies = line_client(s, [b"hello from " + name.encode()])
        with printing:
            print(f"{name}: {replies}", flush=True)
    workers = [threading.Thread(target=one, args=(f"thread-{i}",)) for i in range(3)]
    for t in workers:
        t.start()
    one("main")
    for t in workers:
        t.join()

    mine = kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10)
    errors = []
    t = threading.Thread(target=lambda: errors.append(_try(mine.recv, 10)))
    t.start()
    t.join()
    print("another thread's session:", errors[0])
    mine.close()

    server.shutdown()          # from the main thread; returns once it stops accepting
    server.server_close()      # waits for running handlers (block_on_close)
    serving.join()
    print("done")


def _try(fn, *args):
    try:
        fn(*args)
    except RuntimeError as e:
        return f"RuntimeError: {e}"
    return "no error"


if __name__ == "__main__":
    main()
