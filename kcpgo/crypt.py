"""``kcpgo.crypt``: the packet ciphers, at the import path earlier releases documented.

The code lives in :mod:`kcpgo.codec.crypt`; this name is that same module object, so
``import kcpgo.crypt``, ``from kcpgo.crypt import BlockCrypt`` and ``from kcpgo import crypt``
all keep working.
"""
import sys

from .codec import crypt as _crypt

sys.modules[__name__] = _crypt
