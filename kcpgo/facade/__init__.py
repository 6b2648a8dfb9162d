"""Blocking, ``socket.socket``-like objects over the runtime: :class:`.socket.KCPSocket`,
:class:`.listener.Listener`, the shared wait loop (:mod:`._blocking`) and the factories behind
``kcpgo.dial``/``listen``/``serve_conn`` (:mod:`.api`)."""
