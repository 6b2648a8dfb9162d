"""Helpers the tests share with each other and with the runners in tools/ (not installed):
:mod:`.gopeer` builds and drives the live kcp-go peer (tests/interop/peer.go), :mod:`.latestpeer`
the one on the latest kcp-go (tests/interop/latest/), :mod:`.vectors` loads the golden vectors.
Helpers useful outside this repository live in :mod:`kcpgo.testing`.

Imported as ``tests.support``: setup.cfg's ``pythonpath`` puts the repository root on
``sys.path`` for pytest; a tool run as ``python3 tools/x.py`` adds it itself.
"""
