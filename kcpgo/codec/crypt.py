"""kcp-go's packet ciphers (``BlockCrypt``) and their datagram framing, byte-compatible with kcp-go.

Usage::

    from kcpgo import crypt
    block = crypt.new("aes", crypt.derive_key("it's a secrect"))
    wire = block.seal(payload)          # nonce + CRC32 + payload, encrypted (docs/protocol.md §4.1)
    payload = block.open(wire)          # None if the CRC / AEAD tag does not match

``new(name, key)`` follows kcptun: ``key`` is kcptun's 32-byte "pass" (see ``derive_key``) and is
sliced per cipher name exactly as kcptun does (docs/protocol.md §4.7).

Every object offers kcp-go's whole-datagram ``encrypt`` / ``decrypt`` plus the hot-path
``seal`` / ``open``. Library choices were made by measurement with ``tools/bench_crypt.py``
(CPython 3.11, cryptography 48, pycryptodome 4.4, 2-core machine, 1396-byte datagram); the
reason is noted next to each choice.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import warnings
import zlib
from typing import Callable, Optional, Union

from Crypto.Cipher import Salsa20 as _Salsa20Lib
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _purecfb, _purecipher

try:  # the ``fast`` extra: batch decryption XORs an AES-ECB keystream in numpy
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None  # type: ignore[assignment]

try:  # the ``fast`` extra: zlib-ng's CRC-32 (carry-less multiply), the same CRC-32 as zlib's,
    # 0.19 against 0.61 µs per 1,376-byte payload (2-core machine, zlib 1.2.13)
    from zlib_ng.zlib_ng import crc32 as _fast_crc32
except ImportError:  # pragma: no cover - depends on the environment
    _fast_crc32 = None

try:  # cryptography >= 43 moved CFB and the 64-bit-block ciphers to "decrepit".
    from cryptography.hazmat.decrepit.ciphers import algorithms as _old_algorithms
    from cryptography.hazmat.decrepit.ciphers.modes import CFB as _CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers import algorithms as _old_algorithms
    from cryptography.hazmat.primitives.ciphers.modes import CFB as _CFB

__all__ = ["BlockCrypt", "CIPHER_NAMES", "new", "derive_key", "check_name"]

# ---------------------------------------------------------------------------------------------
# Protocol constants

#: Fixed CFB initial vector of kcp-go (docs/protocol.md §4.2); 8-byte-block ciphers use its first 8 bytes.
INITIAL_VECTOR = bytes.fromhex("a7734f9c12ac1b01a415f2c1fc78e66b")
#: Random nonce in front of every non-AEAD datagram (docs/protocol.md §4.1, §2.2 layout (b)).
NONCE_SIZE = 16
#: CRC32-IEEE of the payload, u32 little-endian, after the nonce (docs/protocol.md §4.1).
CRC_SIZE = 4
#: nonce + CRC32 (docs/protocol.md §4.1).
CRYPT_HEADER_SIZE = NONCE_SIZE + CRC_SIZE
#: AES-GCM nonce and tag sizes (docs/protocol.md §4.6).
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
#: Salsa20 uses datagram bytes 0..7, sent in clear, as its nonce (docs/protocol.md §4.4).
SALSA20_NONCE_SIZE = 8
SALSA20_KEY_SIZE = 32
#: Simple XOR table: PBKDF2-HMAC-SHA1(key, this salt, 32 iterations, 1500 bytes) (docs/protocol.md §4.5).
XOR_TABLE_SALT = b"sH3CIVoF#rWLtJo6"
XOR_TABLE_ITERATIONS = 32
XOR_TABLE_SIZE = 1500
#: kcptun's key derivation defaults (docs/protocol.md §4.7).
KCPTUN_SALT = b"kcp-go"
KCPTUN_ITERATIONS = 4096
KCPTUN_KEY_SIZE = 32

#: Valid names for :func:`new` (kcptun ``--crypt`` names, docs/protocol.md §4.7, plus AES-GCM).
CIPHER_NAMES = ("aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5", "3des",
                "tea", "xtea", "sm4", "xor", "none", "aes-128-gcm", "aes-192-gcm", "aes-256-gcm")

_U32LE = struct.Struct("<I")
_pack_u32 = _U32LE.pack
_unpack_u32_from = _U32LE.unpack_from
_crc32 = _fast_crc32 or zlib.crc32
#: Whether new AES contexts decrypt batches with an ECB keystream (needs numpy; tests switch
#: it off to check the CFB path), and from how many bytes per batch: below about 1.2 KB one
#: CFB update is cheaper than the ECB update and numpy's fixed costs (AES-256 on the 2-core
#: machine: 720 bytes 1.9 µs with CFB against 5.5 µs, 1,440 bytes 4.3 against 3.3, 5,760
#: bytes 11.6 against 4.2).
ECB_KEYSTREAM = _np is not None
_ECB_MIN_BYTES = 2048

Bytes = Union[bytes, bytearray, memoryview]

# ---------------------------------------------------------------------------------------------
# Nonce source: the module's only mutable global state.

# os.urandom costs ~0.45 µs per call; reading 16 bytes from a pool refilled 4 KiB at a time
# costs ~0.12 µs. BytesIO.read is one C call (atomic under the GIL), so no byte is handed out
# twice even when threads race; a racing refill only wastes the rest of the old pool.
_NONCE_POOL_SIZE = 4096
_nonce_pool = io.BytesIO()


def _refill_nonce(n: int) -> bytes:
    global _nonce_pool
    _nonce_pool = io.BytesIO(os.urandom(_NONCE_POOL_SIZE))
    return _nonce_pool.read(n)


def _random_nonce(n: int) -> bytes:
    """``n`` fresh CSPRNG bytes, never handed out before."""
    if n > _NONCE_POOL_SIZE // 2:
        return os.urandom(n)        # a large batch: one call is cheap enough per byte
    nonce = _nonce_pool.read(n)
    return nonce if len(nonce) == n else _refill_nonce(n)


# ---------------------------------------------------------------------------------------------
# Public API

def derive_key(passphrase: Union[str, bytes], salt: bytes = KCPTUN_SALT,
               iterations: int = KCPTUN_ITERATIONS, length: int = KCPTUN_KEY_SIZE) -> bytes:
    """kcptun's key derivation: PBKDF2-HMAC-SHA1(passphrase as UTF-8, salt, iterations, length)."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    return hashlib.pbkdf2_hmac("sha1", passphrase, salt, iterations, length)


class BlockCrypt:
    """One kcp-go packet cipher bound to a key.

    ``encrypt``/``decrypt`` are kcp-go's ``BlockCrypt.Encrypt/Decrypt`` on a whole datagram;
    ``seal``/``open`` add and check the framing (nonce + CRC32, or the AEAD nonce and tag).
    """

    name: str
    key: bytes  # the bytes kcp-go's constructor receives (after kcptun's slicing)
    aead: bool = False
    header_size: int = CRYPT_HEADER_SIZE
    overhead: int = CRYPT_HEADER_SIZE

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        self.key = key

    def __repr__(self) -> str:
        return f"<kcpgo.crypt.BlockCrypt {self.name}>"

    def encrypt(self, data: Bytes) -> bytes:
        """Encrypt a whole datagram (nonce and CRC included); the output has the input's length."""
        raise NotImplementedError

    def decrypt(self, data: Bytes) -> bytes:
        """Inverse of :meth:`encrypt`."""
        raise NotImplementedError

    def seal(self, payload: Bytes, nonce: Optional[bytes] = None) -> bytes:
        """Frame and encrypt one datagram: ``encrypt(nonce16 | crc32(payload) LE | payload)``.

        ``nonce=None`` draws a fresh random nonce (docs/protocol.md §4.1)."""
        if nonce is None:
            nonce = _random_nonce(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        return self.encrypt(b"".join((nonce, _pack_u32(_crc32(payload)), payload)))

    def seal_many(self, payloads: "list[bytes]") -> "list[bytes]":
        """:meth:`seal` for a batch (one flush's datagrams), each with a fresh nonce."""
        seal = self.seal
        return [seal(p) for p in payloads]

    def open_many(self, datagrams: "list[bytes]") -> "list[Optional[bytes]]":
        """:meth:`open` for a batch; each entry ``None`` where its check failed. The caller has
        checked that every datagram is at least :attr:`overhead` bytes long."""
        open_ = self.open
        return [open_(d) for d in datagrams]

    def open(self, datagram: Bytes) -> Optional[bytes]:
        """Decrypt one datagram and check its CRC32; the payload, or None if the check fails."""
        if len(datagram) < CRYPT_HEADER_SIZE:
            return None
        plain = self.decrypt(datagram)
        payload = plain[CRYPT_HEADER_SIZE:]
        if _crc32(payload) != _unpack_u32_from(plain, NONCE_SIZE)[0]:
            return None
        return payload


class _OpenSSLCFB(BlockCrypt):
    """Full-block CFB with kcp-go's fixed IV (docs/protocol.md §4.2) on a `cryptography` cipher.

    Creating an OpenSSL context costs more than encrypting a datagram (AES: 3.3 µs vs 1.8 µs;
    Blowfish's key schedule: 28 µs), so long-lived contexts are kept per key and their
    feedback register is steered instead of restarting them:

    * open/decrypt: a CFB *decryptor*'s register becomes the ciphertext it was fed, so feeding
      the IV as one extra leading block restarts it at the IV. Each call is a single update()
      of ``IV | datagram | zero padding`` (padding keeps it block-aligned for the next call).
    * seal with a random nonce: a persistent encryptor whose register is some earlier
      ciphertext block R encrypts the nonce block N to C0 = N ^ E(R). That equals fixed-IV CFB
      of the nonce N ^ E(R) ^ E(IV), which is as random as N, and every later block depends
      only on C0, so the output is a valid kcp-go datagram. One update() per call, no state
      to track.
    * encrypt (exact, e.g. seal with a given nonce): a second encryptor whose register R is
      tracked; a leading block IV ^ E(R) (computed with the decryptor) makes it emit the IV,
      which restarts it at the IV. R is read and written, so this path holds a lock.

    * open_many with AES and numpy (the ``fast`` extra), from :data:`_ECB_MIN_BYTES`: CFB
      decryption is ``P[i] = C[i] ^ E(C[i-1])``, so the keystream of the whole batch is one
      AES-ECB encryption of the same buffer shifted by a block, which OpenSSL pipelines, and
      one numpy XOR: 30 against 170 µs for 64 datagrams of 1,408 bytes (CFB decryption runs
      one block at a time). The IV block in front of each datagram still restarts it.

    Threads: cryptography releases the GIL inside update() and a second thread entering the
    same context gets RuntimeError("Already borrowed") before anything happens to it. The
    lock-free paths then use a fresh context for that one call (a lock would cost ~0.14 µs
    on every call; the fallback costs only when two threads collide).
    """

    def __init__(self, name: str, key: bytes, algorithm) -> None:
        super().__init__(name, key)
        bs = algorithm.block_size // 8
        self._bs = bs
        self._iv = INITIAL_VECTOR[:bs]
        with warnings.catch_warnings():  # CFB / 64-bit ciphers are "decrepit" in cryptography
            warnings.simplefilter("ignore")
            self._cipher = Cipher(algorithm, _CFB(self._iv))
        self._seal_update = self._cipher.encryptor().update
        self._exact_update = self._cipher.encryptor().update
        self._decrypt_update = self._cipher.decryptor().update
        self._exact_register = self._iv
        self._lock = threading.Lock()
        #: the keystream path of open_many (AES with numpy only: OpenSSL's other ciphers are
        #: not faster in ECB than in CFB, so the XOR would be pure cost)
        self._ecb = None
        if ECB_KEYSTREAM and _np is not None and isinstance(algorithm, algorithms.AES):
            self._ecb = Cipher(algorithm, modes.ECB())
        self._ecb_update = self._ecb.encryptor().update if self._ecb is not None else None
        # _pads[-n % bs] brings an n-byte input up to a whole number of blocks.
        self._pads = tuple(bytes(i) for i in range(bs))

    def _run_decryptor(self, data: bytes) -> bytes:
        """decryptor.update(data) on the shared context, or a fresh one if another thread has it."""
        try:
            return self._decrypt_update(data)
        except RuntimeError:
            return self._cipher.decryptor().update(data)

    def encrypt(self, data: Bytes) -> bytes:
        bs = self._bs
        n = len(data)
        with self._lock:
            restart = self._run_decryptor(self._exact_register + self._iv)[bs:]
            out = self._exact_update(b"".join((restart, data, self._pads[-n % bs])))
            self._exact_register = out[-bs:]
        return out[bs:bs + n]

    def decrypt(self, data: Bytes) -> bytes:
        bs = self._bs
        n = len(data)
        return self._run_decryptor(b"".join((self._iv, data, self._pads[-n % bs])))[bs:bs + n]

    def seal(self, payload: Bytes, nonce: Optional[bytes] = None) -> bytes:
        if nonce is not None:
            return BlockCrypt.seal(self, payload, nonce)
        n = len(payload) + CRYPT_HEADER_SIZE
        nonce = _nonce_pool.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            nonce = _refill_nonce(NONCE_SIZE)
        plain = b"".join((nonce, _pack_u32(_crc32(payload)), payload, self._pads[-n % self._bs]))
        try:
            out = self._seal_update(plain)
        except RuntimeError:  # context busy in another thread: any start register will do
            out = self._cipher.encryptor().update(plain)
        return out[:n]  # no copy when no padding was added

    def seal_many(self, payloads: "list[bytes]") -> "list[bytes]":
        """Seal a batch with ONE update() of the persistent encryptor.

        Each datagram is padded to whole blocks inside the stream, so the next one starts on a
        block boundary with some earlier ciphertext block in the register, exactly the
        situation :meth:`seal` relies on; the padding's ciphertext is dropped. This removes
        the per-datagram call overhead (and the GIL is released for the whole batch).
        """
        if len(payloads) == 1:
            # one datagram (request/response traffic): seal() skips the batch bookkeeping,
            # 1.5 vs 2.9 µs for a 52-byte datagram (tools/bench_crypt.py, bench_rx.py)
            return [self.seal(payloads[0])]
        bs = self._bs
        pads = self._pads
        pack = _pack_u32
        crc32 = _crc32
        nonces = _random_nonce(NONCE_SIZE * len(payloads))
        parts = []
        ends = []
        pos = 0
        i = 0
        for p in payloads:
            n = len(p) + CRYPT_HEADER_SIZE
            pad = pads[-n % bs]
            parts += (nonces[i:i + NONCE_SIZE], pack(crc32(p)), p, pad)
            i += NONCE_SIZE
            end = pos + n
            ends.append((pos, end))
            pos = end + len(pad)
        plain = b"".join(parts)
        try:
            out = self._seal_update(plain)
        except RuntimeError:  # context busy in another thread: any start register will do
            out = self._cipher.encryptor().update(plain)
        return [out[a:b] for a, b in ends]

    def open_many(self, datagrams: "list[bytes]") -> "list[Optional[bytes]]":
        """Open a batch with ONE update() of the decryptor: an IV block before each datagram
        restarts the register at the IV (see the class notes)."""
        bs = self._bs
        iv = self._iv
        pads = self._pads
        ecb = self._ecb_update is not None and \
            bs * len(datagrams) + sum(map(len, datagrams)) >= _ECB_MIN_BYTES
        # where a datagram's plaintext starts, relative to its IV block: the keystream path's
        # output starts at buf[bs] (_ecb_decrypt), the decryptor's at buf[0]
        first = 0 if ecb else bs
        parts = []
        spans = []
        pos = 0
        for d in datagrams:
            n = len(d)
            pad = pads[-n % bs]
            parts += (iv, d, pad)
            spans.append((pos + first, n))
            pos += bs + n + len(pad)
        buf = b"".join(parts)
        plain = self._ecb_decrypt(buf) if ecb else self._run_decryptor(buf)
        crc32 = _crc32
        unpack = _unpack_u32_from
        out: "list[Optional[bytes]]" = []
        for start, n in spans:
            payload = plain[start + CRYPT_HEADER_SIZE:start + n]
            out.append(payload if crc32(payload) == unpack(plain, start + NONCE_SIZE)[0]
                       else None)
        return out

    def _ecb_decrypt(self, buf: bytes) -> bytes:
        """CFB decryption of ``buf[bs:]`` with ``buf``'s blocks as the registers."""
        head = memoryview(buf)[:-self._bs]
        try:
            keystream = self._ecb_update(head)
        except RuntimeError:  # context busy in another thread
            keystream = self._ecb.encryptor().update(head)
        words = _np.frombuffer(buf, dtype=_np.uint64)[self._bs // 8:]
        return (words ^ _np.frombuffer(keystream, dtype=_np.uint64)).tobytes()

    def open(self, datagram: Bytes) -> Optional[bytes]:
        bs = self._bs
        n = len(datagram)
        if n < CRYPT_HEADER_SIZE:
            return None
        buf = b"".join((self._iv, datagram, self._pads[-n % bs]))
        try:
            plain = self._decrypt_update(buf)
        except RuntimeError:  # context busy in another thread
            plain = self._cipher.decryptor().update(buf)
        payload = plain[bs + CRYPT_HEADER_SIZE:bs + n]
        if _crc32(payload) != _unpack_u32_from(plain, bs + NONCE_SIZE)[0]:
            return None
        return payload


class _PureCFB(BlockCrypt):
    """Full-block CFB (docs/protocol.md §4.2) over a pure-Python block cipher (TEA, XTEA,
    Twofish). Decryption and batches run many blocks per operation (``_purecfb``: Python-int
    lanes, or numpy when installed); encrypting one datagram is sequential."""

    def __init__(self, name: str, key: bytes, encrypt_block: Callable[[int], int],
                 block_size: int, byteorder: str) -> None:
        super().__init__(name, key)
        self._engine = _purecfb.CFBEngine(name, key, encrypt_block, block_size, byteorder,
                                          INITIAL_VECTOR)

    def encrypt(self, data: Bytes) -> bytes:
        return self._engine.encrypt(data)

    def decrypt(self, data: Bytes) -> bytes:
        return self._engine.decrypt(data)

    def seal_many(self, payloads: "list[bytes]") -> "list[bytes]":
        nonces = _random_nonce(NONCE_SIZE * len(payloads))
        return self._engine.encrypt_many([
            b"".join((nonces[i * NONCE_SIZE:(i + 1) * NONCE_SIZE], _pack_u32(_crc32(p)), p))
            for i, p in enumerate(payloads)])

    def open_many(self, datagrams: "list[bytes]") -> "list[Optional[bytes]]":
        out: "list[Optional[bytes]]" = []
        for plain in self._engine.decrypt_many(datagrams):
            payload = plain[CRYPT_HEADER_SIZE:]
            out.append(payload if len(plain) >= CRYPT_HEADER_SIZE
                       and _crc32(payload) == _unpack_u32_from(plain, NONCE_SIZE)[0] else None)
        return out


class _Salsa20(BlockCrypt):
    """kcp-go's Salsa20 (docs/protocol.md §4.4): bytes 0..7 in clear are the nonce, 8.. are XORed
    with Salsa20/20 (counter 0). Needs at least 8 bytes."""

    def __init__(self, name: str, key: bytes) -> None:
        super().__init__(name, key)
        # kcp-go copies the key into a 32-byte array: zero-padded or truncated.
        self._key32 = key[:SALSA20_KEY_SIZE].ljust(SALSA20_KEY_SIZE, b"\0")
        # pycryptodome's first call resolves cffi types under a cffi lock that gevent patches
        # (it switched greenlets inside kcpgo's stack lock: other greenlets' calls failed);
        # made here, outside any kcpgo call, once for the process
        self.encrypt(bytes(SALSA20_NONCE_SIZE))

    def encrypt(self, data: Bytes) -> bytes:
        if len(data) < SALSA20_NONCE_SIZE:
            raise ValueError("salsa20 needs at least 8 bytes (kcp-go panics below that)")
        nonce = bytes(data[:SALSA20_NONCE_SIZE])
        # PyCryptodome: the only installed Salsa20 (cryptography has none); ~6 µs per datagram,
        # mostly the per-nonce object set-up, versus milliseconds for pure Python.
        return nonce + _Salsa20Lib.new(key=self._key32, nonce=nonce).encrypt(
            data[SALSA20_NONCE_SIZE:])

    decrypt = encrypt


class _SimpleXor(BlockCrypt):
    """kcp-go's simple XOR (docs/protocol.md §4.5): byte i ^= table[i] for i < 1500. Not secure."""

    def __init__(self, name: str, key: bytes) -> None:
        super().__init__(name, key)
        self.xor_table = hashlib.pbkdf2_hmac("sha1", key, XOR_TABLE_SALT, XOR_TABLE_ITERATIONS,
                                             XOR_TABLE_SIZE)
        # Big-endian int of the table: its first m bytes are one right shift away (2.1 µs per
        # 1396-byte datagram, vs 2.9 µs slicing the table and converting it each time).
        self._table_int = int.from_bytes(self.xor_table, "big")

    def encrypt(self, data: Bytes) -> bytes:
        n = len(data)
        m = min(n, XOR_TABLE_SIZE)
        if m == 0:
            return b""
        head = int.from_bytes(data[:m], "big") ^ (self._table_int >> (8 * (XOR_TABLE_SIZE - m)))
        head = head.to_bytes(m, "big")
        return head + bytes(data[m:]) if n > m else head

    decrypt = encrypt


class _NoneCrypt(BlockCrypt):
    """kcp-go's "none": identity, but the nonce + CRC32 header is still sent and checked."""

    def encrypt(self, data: Bytes) -> bytes:
        return bytes(data)

    decrypt = encrypt

    def seal(self, payload: Bytes, nonce: Optional[bytes] = None) -> bytes:
        if nonce is None:
            nonce = _random_nonce(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        return b"".join((nonce, _pack_u32(_crc32(payload)), payload))

    def open(self, datagram: Bytes) -> Optional[bytes]:
        if len(datagram) < CRYPT_HEADER_SIZE:
            return None
        payload = bytes(datagram[CRYPT_HEADER_SIZE:])
        if _crc32(payload) != _unpack_u32_from(datagram, NONCE_SIZE)[0]:
            return None
        return payload


class _AESGCM(BlockCrypt):
    """[latest kcp-go] AES-GCM framing (docs/protocol.md §4.6): nonce(12) | ciphertext | tag(16),
    empty associated data, no CRC."""

    aead = True
    header_size = GCM_NONCE_SIZE
    overhead = GCM_NONCE_SIZE + GCM_TAG_SIZE

    def __init__(self, name: str, key: bytes) -> None:
        super().__init__(name, key)
        # cryptography's AESGCM: ~0.7 µs per 1376-byte seal or open (one C call, no set-up).
        self._gcm = AESGCM(key)

    def seal(self, payload: Bytes, nonce: Optional[bytes] = None) -> bytes:
        if nonce is None:
            nonce = _nonce_pool.read(GCM_NONCE_SIZE)
            if len(nonce) != GCM_NONCE_SIZE:
                nonce = _refill_nonce(GCM_NONCE_SIZE)
        elif len(nonce) != GCM_NONCE_SIZE:
            raise ValueError(f"nonce must be {GCM_NONCE_SIZE} bytes")
        return nonce + self._gcm.encrypt(nonce, payload, None)

    def open(self, datagram: Bytes) -> Optional[bytes]:
        if len(datagram) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
            return None
        try:
            return self._gcm.decrypt(datagram[:GCM_NONCE_SIZE], datagram[GCM_NONCE_SIZE:], None)
        except InvalidTag:
            return None

    def encrypt(self, data: Bytes) -> bytes:
        """AEAD: ``nonce(12) | ciphertext | tag(16)`` with a fresh random nonce."""
        return self.seal(data)

    def decrypt(self, data: Bytes) -> bytes:
        """AEAD: the plaintext of ``nonce | ciphertext | tag``; ValueError if too short or forged."""
        if len(data) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
            raise ValueError(f"AES-GCM datagram shorter than {GCM_NONCE_SIZE + GCM_TAG_SIZE} bytes")
        plain = self.open(data)
        if plain is None:
            raise ValueError("AES-GCM authentication failed")
        return plain


# ---------------------------------------------------------------------------------------------
# Cipher table: name -> (key rule, factory). Key rule: an int n = "kcptun passes key[:n]",
# or a tuple of accepted lengths / None (any length) for ciphers given the key as is
# (docs/protocol.md §4.3 and §4.7).

def _openssl(algorithm_factory) -> Callable[[str, bytes], BlockCrypt]:
    # cryptography (OpenSSL) CFB beats PyCryptodome everywhere measured, per 1396-byte
    # datagram with persistent contexts: AES-256 1.8 vs 12 µs, Blowfish 12 vs 13 µs,
    # CAST5 13 vs 18 µs, 3DES 47 vs 126 µs; SM4 (11 µs) exists only in cryptography.
    def make(name: str, key: bytes) -> BlockCrypt:
        return _OpenSSLCFB(name, key, algorithm_factory(key))
    return make


def _blowfish_algorithm(key: bytes):
    # Blowfish's key schedule reads the key cyclically, so a 1..3-byte key (accepted by Go,
    # refused by OpenSSL) equals itself repeated up to >= 4 bytes.
    return _old_algorithms.Blowfish(key * -(-4 // len(key)))


def _pure(encryptor, block_size: int, byteorder: str) -> Callable[[str, bytes], BlockCrypt]:
    def make(name: str, key: bytes) -> BlockCrypt:     # in neither cryptography nor pycryptodome
        return _PureCFB(name, key, encryptor(key), block_size, byteorder)
    return make


_CIPHERS = {
    "aes": (32, _openssl(algorithms.AES)),
    "aes-128": (16, _openssl(algorithms.AES)),
    "aes-192": (24, _openssl(algorithms.AES)),
    "salsa20": (None, _Salsa20),
    "blowfish": (tuple(range(1, 57)), _openssl(_blowfish_algorithm)),
    "twofish": ((16, 24, 32), _pure(_purecipher.twofish_encryptor, 16, "little")),
    "cast5": (16, _openssl(_old_algorithms.CAST5)),
    "3des": (24, _openssl(_old_algorithms.TripleDES)),
    "tea": (16, _pure(_purecipher.tea_encryptor, 8, "big")),
    "xtea": (16, _pure(_purecipher.xtea_encryptor, 8, "big")),
    "sm4": (16, _openssl(algorithms.SM4)),
    "xor": (None, _SimpleXor),
    "none": (None, _NoneCrypt),
    "aes-128-gcm": (16, _AESGCM),
    "aes-192-gcm": (24, _AESGCM),
    "aes-256-gcm": (32, _AESGCM),
}
assert tuple(_CIPHERS) == CIPHER_NAMES


def check_name(name: str) -> str:
    """``name`` in lower case if one of :data:`CIPHER_NAMES`, else ``ValueError`` naming them."""
    if not isinstance(name, str) or name.lower() not in _CIPHERS:
        raise ValueError(f"unknown cipher {name!r}; valid names: {', '.join(CIPHER_NAMES)}")
    return name.lower()


def new(name: str, key: Bytes) -> BlockCrypt:
    """Create the cipher kcptun selects with ``--crypt name`` from its derived key ``key``.

    The key is sliced per name as kcptun does (docs/protocol.md §4.7): aes -> key[:32] (AES-256),
    aes-128 -> key[:16], aes-192 -> key[:24], cast5/tea/xtea/sm4 -> key[:16], 3des -> key[:24],
    aes-N-gcm -> key[:N/8]; blowfish (1..56 bytes), twofish (16/24/32), salsa20 (any, zero-padded
    or truncated to 32), xor (any) get the key as given; none ignores it. Raises ValueError for
    an unknown name or a key of unusable length, TypeError if ``key`` is not bytes-like.
    """
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    lname = check_name(name)
    rule, factory = _CIPHERS[lname]
    if isinstance(rule, int):
        if len(key) < rule:
            raise ValueError(f"cipher {lname!r} needs a key of at least {rule} bytes, "
                             f"got {len(key)}")
        key = key[:rule]
    elif rule is not None and len(key) not in rule:
        wanted = "16, 24 or 32" if len(rule) == 3 else f"{rule[0]} to {rule[-1]}"
        raise ValueError(f"cipher {lname!r} needs a key of {wanted} bytes, got {len(key)}")
    return factory(lname, key)
