"""KCP's constants and the state-record layout shared by the KCP modules (docs/protocol.md §1.1).

Pure data: ``kcp.py`` (state, application side), ``kcp_input.py`` (``input``, RTT, cwnd
growth) and ``kcp_output.py`` (``flush``: ACKs, probes, retransmission, cwnd reaction) import
these, so each value is named once.
"""
from __future__ import annotations

from .wire import HEADER

# §1.1 constants.
RTO_NDL = 30          # minimum RTO with nodelay
RTO_MIN = 100         # minimum RTO without nodelay
RTO_DEF = 200         # initial rx_rto
RTO_MAX = 60000       # clamp for rx_rto (not for a segment's backed-off rto)
ASK_SEND = 1          # send WASK at next flush
ASK_TELL = 2          # send WINS at next flush
WND_SND = 32
WND_RCV = 32          # kcp-go's default (C KCP: 128)
MTU_DEF = 1400
INTERVAL = 100
DEADLINK = 20
THRESH_INIT = 2
THRESH_MIN = 2
PROBE_INIT = 7000     # [5.6.1]
PROBE_INIT_LATEST = 500   # [latest]
PROBE_LIMIT = 120000
WINS_RETRIES = 4      # D60: repeats of a WINS that announced an opened window
RESTART_CONFIRM = 200  # D62: ms between two signs of a restarted peer
MAX_FRAGMENTS = 255   # §1.5: kcp-go's Send refuses more
#: D20: default fragment limit of a message-mode ``KCP.send``. A message is only delivered once
#: all its fragments fit the receiver's rcv_queue (rcv_wnd segments, skywind3000/kcp#140), and
#: the sender cannot know that window: kcp-go's default receive window is the safe bound.
MAX_MSG_FRAGMENTS = WND_RCV
MAX_WINDOW = 0xFFFF   # the wnd field is u16 (§8.6)
#: [latest] §1.9 phase 5: the fastack of a segment just fast- or early-retransmitted. It
#: collects no duplicate ACKs and triggers no fast/early retransmission until its RTO fires
#: (which resets fastack to 0): at most one fast retransmission per RTO round (D50).
FASTACK_LOCKED = -1

#: Values of :attr:`KCP.flush_requested`.
FLUSH_NONE = 0
FLUSH_ACK_ONLY = 1
FLUSH_FULL = 2

#: u32 mask and half range: sequence numbers are compared with a signed 32-bit difference.
MASK = 0xFFFFFFFF
HALF = 0x80000000
pack_header = HEADER.pack
unpack_header = HEADER.unpack_from

# Fields of a send-side segment record (a small list, mutated in place). MSG is 1 for a
# fragment of a message queued by message-mode ``KCP.send`` (re-cut as a whole message by
# ``set_mtu``) and 0 for a chunk queued by ``write`` or stream-mode ``send``, a message of its
# own (re-cut into separate frg-0 pieces; D23). Only ``set_mtu`` reads it.
D, FRG, TS, XMIT, RESEND, RTO, FASTACK, MSG = range(8)
