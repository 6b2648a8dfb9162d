"""The gevent runtime: the only layer that does I/O or reads the clock.

* :mod:`.clock`: the one clock (``now_ms``, ``monotonic``);
* :mod:`.modes`: where sessions run, ``"thread"`` (the I/O thread) or ``"hub"``;
* :mod:`.iothread`: the I/O thread of ``"thread"`` mode;
* :mod:`.scheduler`: one scheduler greenlet per hub, :class:`~.scheduler.Timer` handles, the
  stack lock, thread hand-overs, a cross-thread :class:`~.scheduler.Signal`;
* :mod:`.waiters`: :class:`~.waiters.Waiter`, a blocked call's wake-up from any thread;
* :mod:`.udp`: a reader greenlet per UDP socket (batches, GSO/GRO); :mod:`.pktinfo`: replies
  from the local address a datagram was sent to;
* :mod:`.channel`: drives one sans-IO connection on an endpoint (no greenlet of its own);
* :mod:`.smux_driver`: drives an smux stack on a channel.
"""
