"""The gevent runtime: the only layer that does I/O or reads the clock.

* :mod:`.clock`: the one clock (``now_ms``, ``monotonic``);
* :mod:`.scheduler`: one scheduler greenlet per hub, :class:`~.scheduler.Timer` handles,
  thread ownership, a cross-thread :class:`~.scheduler.Signal`;
* :mod:`.udp`: a reader greenlet per UDP socket (batches, GSO/GRO);
* :mod:`.channel`: drives one sans-IO connection on an endpoint (no greenlet of its own).
"""
