#!/usr/bin/env python3
"""Concurrency model (c): kcpgo in real OS threads of an unpatched program.

    python examples/model_os_thread.py

kcpgo's sessions run on an I/O thread of their own (kcpgo.get_runtime() == "thread"), so they
are used like sockets: from any thread, while other threads block anywhere. Here the server's
handlers are real threads, client threads dial their own sessions, and one session is shared:
a thread reads while the main thread writes. shutdown() and server_close() work from any
thread.
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

    # One session, two threads: a reader thread while this thread writes, as with a socket.
    shared = kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10)
    got = []
    reader = threading.Thread(target=lambda: got.append(shared.makefile("rb").readline()))
    reader.start()
    shared.sendall(b"written by main, read by another thread\n")
    reader.join()
    print("shared session:", got[0].decode().strip())
    shared.sendall(b"QUIT\n")
    shared.close()

    server.shutdown()          # from the main thread; returns once it stops accepting
    server.server_close()      # waits for running handlers (block_on_close)
    serving.join()
    print("done")


if __name__ == "__main__":
    main()
