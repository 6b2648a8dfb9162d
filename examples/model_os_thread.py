#!/usr/bin/env python3
"""Concurrency model (c): kcpgo in real OS threads of an unpatched program.

    python examples/model_os_thread.py

kcpgo's sessions run on an I/O thread of their own (kcpgo.get_runtime() == "thread"), so they
are used like sockets: from any thread, while other threads block anywhere. Here the server's
handlers are real threads, client threads dial their own sessions, and one session is shared:
a thread reads while the main thread writes. shutdown() and server_close() work from any
thread. Ctrl-C stops it quietly (exit status 130).
"""
import threading

import kcpgo
from kcpgo.server import ThreadingKCPServer
from lineproto import EndSessionsMixIn, LineEcho, line_client  # noqa: E402  (on sys.path)


class Server(EndSessionsMixIn, ThreadingKCPServer):
    """Ctrl-C ends the sessions still open (KCP has no FIN: lineproto.EndSessionsMixIn)."""


def main() -> None:
    server = Server(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10)
    serving = threading.Thread(target=server.serve_forever, name="kcp-server")
    serving.start()
    try:
        talk(server)
    finally:                        # also on Ctrl-C (KeyboardInterrupt in the main thread)
        server.shutdown()           # from the main thread; returns once it stops accepting
        server.end_sessions()
        server.server_close()       # waits for running handlers (block_on_close)
        serving.join()
    print("done")


def talk(server):
    printing = threading.Lock()     # one whole line per print, whichever thread finishes first

    def one(name):
        # this thread dials, so the session is this thread's
        with kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10) as s:
            replies = line_client(s, [b"hello from " + name.encode()])
        with printing:
            print(f"{name}: {replies}", flush=True)
    # daemon: after Ctrl-C the program exits without waiting for them
    workers = [threading.Thread(target=one, args=(f"thread-{i}",), daemon=True)
               for i in range(3)]
    for t in workers:
        t.start()
    one("main")
    for t in workers:
        t.join()

    # One session, two threads: a reader thread while this thread writes, as with a socket.
    with kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10) as shared:
        got = []
        reader = threading.Thread(target=lambda: got.append(shared.makefile("rb").readline()),
                                  daemon=True)
        reader.start()
        shared.sendall(b"written by main, read by another thread\n")
        reader.join()
        print("shared session:", got[0].decode().strip())
        shared.sendall(b"QUIT\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, with status 130 as a shell expects
        raise SystemExit(130)
