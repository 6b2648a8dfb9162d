"""``python -m kcpgo tunnel server --workers N`` (beyond kcptun; Linux): N processes serve one
UDP port, each on a socket of its own with ``SO_REUSEPORT`` (:mod:`kcpgo.server_workers`: the
kernel keeps each client's datagrams on one worker; nothing is shared).

The first process binds ``--listen`` (so that port 0 becomes one port for all) and forks the
others before anything else runs (no hub, no greenlet, no session yet); each process then runs
the ordinary tunnel server (:func:`kcpgo.cli.tunnel.run_process`) on a listener of its own, and the
first one, which alone prints ``LISTENING`` and writes the SNMP log, stops and reaps the others
when it stops (SIGTERM, SIGINT, a fatal error). A worker dies with it. Every process's log
lines after the start-up ones begin with ``worker N:`` (0 for the first process).
"""
from __future__ import annotations

import logging
import os

from ..address import bind_plan
from ..facade.api import udp_socket
from ..server_workers import WorkerPool
from .kcptun_config import TunnelConfig
from .tunnel import TunnelServer, run_process

__all__ = ["run_workers"]

log = logging.getLogger("kcpgo.tunnel")


def run_workers(cfg: TunnelConfig) -> int:
    """``server --workers N``: bind the port (``SO_REUSEPORT``, so that port 0 becomes one
    port for all), fork the workers while nothing else runs yet, then each process serves on
    a listener of its own; the reserved socket is closed once each one has bound."""
    try:
        family, sockaddr, dualstack = bind_plan(cfg.listen, "--listen")
        reserve = udp_socket(family, dualstack, reuse_port=True, where="--workers")
        try:
            reserve.bind(sockaddr)
        except BaseException:
            reserve.close()
            raise
    except (OSError, ValueError) as e:
        log.error("cannot listen on %s: %s", cfg.listen, e)
        return 1
    address = reserve.getsockname()
    pool = WorkerPool(cfg.workers)

    def worker(index: int) -> int:
        return run_process(cfg, TunnelServer(cfg, address, reuse_port=True), reserve, index)
    try:
        pool.start(worker)
    except OSError as e:
        reserve.close()
        log.error("cannot start --workers %d: %s", cfg.workers, e)
        return 1
    log.info("worker pids: %d (worker 0), %s", os.getpid(),
             ", ".join(f"{p} (worker {i})" for i, p in enumerate(pool.pids, 1)))
    return run_process(cfg, TunnelServer(cfg, address, reuse_port=True), reserve, 0, pool)
