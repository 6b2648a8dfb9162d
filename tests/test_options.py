"""kcpgo.Options: one validated schema for every entry point (no sockets needed)."""
from __future__ import annotations

import argparse
import warnings

import pytest

import kcpgo
from kcpgo.options import FIELDS, add_arguments, from_arguments
from kcpgo.server import server_options


@pytest.mark.parametrize("bad,match", [
    (dict(mode="warp"), "valid: normal, fast, fast2, fast3"),
    (dict(mtu=40), r"50\.\.1500"),
    (dict(mtu=1501), r"50\.\.1500"),
    (dict(window=(-1, 10)), r"0\.\.65535"),
    (dict(window=(70000, 10)), r"0\.\.65535"),
    (dict(window=(True, 10)), r"0\.\.65535"),            # a bool is not a segment count
    (dict(window=(10,)), "sndwnd, rcvwnd"),
    (dict(data_shards=True, parity_shards=3), ">= 0"),
    (dict(stream="no"), "True or False"),
    (dict(ack_nodelay=None), "True or False"),
    (dict(idle_timeout=True), "> 0 seconds"),
    (dict(snmp="x"), "kcpgo.Snmp"),
    (dict(data_shards=200, parity_shards=100), "<= 256"),
    (dict(data_shards=-1), ">= 0"),
    (dict(idle_timeout=0), "> 0 seconds"),
    # kcp-go SetRateLimit(bytesPerSecond uint32): a whole byte count, 0 = off
    (dict(rate_limit=-1), r"rate_limit \(bytes/s\) must be an int in >= 0"),
    (dict(rate_limit=1.5), r"rate_limit .*>= 0"),
    (dict(rate_limit=True), r"rate_limit .*>= 0"),
    (dict(rate_limit=None), r"rate_limit .*>= 0"),
    (dict(crypt="aes"), "needs a key"),
    (dict(key="k"), "without crypt"),
    (dict(crypt="rot13", key="k"), "valid names"),
    # a misspelt name without a key: the name is the mistake (it said "needs a key", a new
    # user's finding with crypt="aes256")
    (dict(crypt="aes256"), "unknown cipher 'aes256'; valid names"),
    # 60 bytes leave no room for data after aes (20) + FEC (8) + one KCP header (24)
    (dict(mtu=52, crypt="aes", key="k", data_shards=10, parity_shards=3), "no room"),
])
def test_bad_values_raise_value_error_with_the_range(bad, match):
    with pytest.raises(ValueError, match=match):
        kcpgo.Options(**bad)
    with pytest.raises(ValueError, match=match):       # the same check at every entry point
        kcpgo.dial(("127.0.0.1", 9), **bad)
    with pytest.raises(ValueError, match=match):
        server_options(dict(bad))


def test_unknown_names_raise_type_error_listing_the_valid_ones():
    for call in (lambda: kcpgo.dial(("127.0.0.1", 9), windw=(1, 1)),
                 lambda: kcpgo.listen(("127.0.0.1", 0), windw=(1, 1)),
                 lambda: server_options({"windw": (1, 1)})):
        with pytest.raises(TypeError, match="windw.*valid:.*window"):
            call()


def test_options_object_and_keywords_combine():
    base = kcpgo.Options(crypt="aes", key="pw", mode="fast3", window=(1024, 1024))
    assert base.block is not None and base.block.name == "aes"
    faster = base.replace(mtu=1200)
    assert (faster.mtu, faster.mode, faster.block.key) == (1200, "fast3", base.block.key)
    assert base.replace(crypt="salsa20").block.name == "salsa20"       # keeps the passphrase
    ready = base.replace(crypt=base.block)                             # a BlockCrypt needs no key
    assert ready.block is base.block and ready.key is None
    conn = faster.connection(5)
    assert (conn.conv, conn.mtu, conn.stream) == (5, 1200, False)
    with kcpgo.dial(("127.0.0.1", 9), base, stream=True, conv=77) as s:
        assert s.conv == 77 and s._conn.stream and s._conn.mtu == 1400
    with pytest.raises(TypeError, match="kcpgo.Options"):
        kcpgo.dial(("127.0.0.1", 9), {"mode": "fast3"})


def test_window_from_a_config_file_and_zero_keeps_the_default():
    # JSON/YAML give lists; set_window_size's "<= 0 leaves one unchanged" carries over as 0
    opts = kcpgo.Options(window=[128, 512])
    assert opts.window == (128, 512)
    conn = kcpgo.Options(window=(0, 64)).connection(1)
    assert (conn.kcp.snd_wnd, conn.kcp.rcv_wnd) == (32, 64)


def test_options_copy_and_pickle():
    import copy
    import pickle
    opts = kcpgo.Options(crypt="aes", key="pw", mode="fast3", window=(1024, 1024))
    for clone in (copy.deepcopy(opts), pickle.loads(pickle.dumps(opts))):
        assert clone == opts and clone.block.key == opts.block.key


def test_kcptun_presets():
    c, s = kcpgo.KCPTUN_CLIENT, kcpgo.KCPTUN_SERVER
    assert (c.mode, c.mtu, c.window, c.data_shards, c.parity_shards, c.stream) == \
        ("fast", 1350, (128, 512), 10, 3, True)
    assert s.window == (1024, 1024)
    assert c.replace(crypt="aes", key="it's a secrect").block.name == "aes"


def test_server_defaults_and_own_options():
    so = server_options({"mode": "fast3"}, idle_timeout=30)
    assert (so.session.stream, so.session.idle_timeout, so.backlog) == (True, 30, 128)
    # the server's defaults also apply over an options object that leaves them unset
    so = server_options({"options": kcpgo.Options(mode="fast"), "backlog": 4,
                         "drain_timeout": None}, idle_timeout=30)
    assert (so.session.stream, so.session.idle_timeout, so.backlog, so.drain_timeout) == \
        (True, 30, 4, None)
    so = server_options({"options": kcpgo.KCPTUN_SERVER.replace(idle_timeout=5)})
    assert (so.session.stream, so.session.idle_timeout, so.session.mode) == (True, 5, "fast")
    so = server_options({"options": kcpgo.Options(), "stream": False, "idle_timeout": None})
    assert (so.session.stream, so.session.idle_timeout) == (False, None)   # keywords win
    with pytest.raises(ValueError, match="backlog"):
        server_options({"backlog": 0})


def test_command_line_flags():
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    opts = from_arguments(ap.parse_args(["--crypt", "aes", "--key", "k", "--fec", "10/3",
                                         "--mode", "fast3", "--window", "1024/1024"]))
    assert opts == dict(crypt="aes", key="k", data_shards=10, parity_shards=3, mode="fast3",
                        window=(1024, 1024))
    assert set(opts) <= FIELDS
    with pytest.raises(ValueError, match="A/B"):
        from_arguments(ap.parse_args(["--fec", "10"]))
    with pytest.raises(ValueError, match="needs a key"):
        from_arguments(ap.parse_args(["--crypt", "aes"]))


def test_cipher_none_needs_no_key():
    """kcp-go's "none" cipher ignores its key (docs/protocol.md §4: identity plus the nonce and
    CRC header), and kcptun accepts ``--crypt none`` with any key: a kcpgo session with
    ``crypt="none"`` and no key talks to one whose key is "x" (found in a new user's trial)."""
    import kcpgo
    with kcpgo.listen(("127.0.0.1", 0), crypt="none") as ln:
        ln.settimeout(5)
        with kcpgo.dial(ln.getsockname(), crypt="none", key="x", timeout=5) as c:
            c.sendall(b"ping")
            s, _ = ln.accept()
            with s:
                s.settimeout(5)
                assert s.recv(10) == b"ping"


def test_options_constructor_lists_valid_names():
    """README "Session options": an unknown name raises TypeError listing the valid ones, for
    ``Options(...)`` as for ``dial``/``listen`` (a new user's ``Options(modee=...)`` got the
    bare dataclass message)."""
    import kcpgo
    with pytest.raises(TypeError, match=r"modee.*valid: .*mode"):
        kcpgo.Options(modee="fast3")


@pytest.mark.parametrize("ds, ps", [(10, 0), (0, 3)])
def test_half_set_fec_warns_that_it_is_off(ds, ps):
    """kcp-go's rule stands (FEC needs both shard counts > 0, else none), but a new user who
    wrote ``dial(addr, data_shards=10)`` got no FEC and no word of it: a UserWarning now
    says FEC is off and why. Both set, or both 0, say nothing."""
    with pytest.warns(UserWarning, match="FEC is off") as caught:
        kcpgo.Options(data_shards=ds, parity_shards=ps)
        kcpgo.listen(("127.0.0.1", 0), data_shards=ds, parity_shards=ps).close()
        kcpgo.Options().replace(data_shards=ds, parity_shards=ps)
    # each names the caller's line, not kcpgo's (else Python shows only the first of them)
    assert [w.filename for w in caught] == [__file__] * 3, [w.filename for w in caught]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kcpgo.Options(data_shards=10, parity_shards=3)
        kcpgo.Options()
