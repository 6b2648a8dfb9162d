// Command peer is the Go side of the kcpgo live-interop harness.
//
// It runs github.com/xtaci/kcp-go (Debian golang-github-xtaci-kcp-dev, v5.6.1)
// either as an ECHO server or as an ECHO client, configured the way kcptun
// configures kcp-go, so that the Python kcpgo implementation can be tested
// against the real thing (and against itself through the same protocol).
//
// Build (GOPATH mode, no module proxy needed):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$PWD/gopath GOCACHE=/tmp/gocache \
//	    go build -o peer peer.go
//
// # ECHO protocol
//
// The client dials the server and writes exactly -bytes N bytes of the
// deterministic payload (see below) in Write calls of 64 KiB (kcp-go itself
// cuts every Write into <= mss messages). Concurrently it reads the echo until
// N bytes came back. It prints
//
//	SENT <N> <sha256hex of the bytes sent>
//	ECHOED <N> <sha256hex of the bytes echoed>
//
// and exits 0 only if the echo equals the sent bytes byte for byte.
//
// The server writes back everything it reads, one Write per Read (in message
// mode each Read returns exactly one KCP message, so message boundaries are
// preserved). After a session has delivered N bytes it prints
//
//	RECEIVED <N> <sha256hex of the received bytes>
//
// and keeps the session open until -linger seconds (default 3) pass without
// any further data, so that the tail of its echo is delivered and
// retransmitted if needed (KCP has no FIN: the client's Close is invisible).
// Receiving more than N bytes on a session is an error. Sessions that never
// receive a byte (e.g. a session re-created by a late ACK after an earlier
// session was closed, see docs/protocol.md §5.2) are ignored. The server exits 0
// once -sessions sessions have completed. Once bound it prints
//
//	LISTENING <ip:port>
//
// All stdout lines are written with a single write each (stdout is unbuffered
// in Go, so every line is flushed immediately). Errors go to stderr and make
// the process exit non-zero; hitting the overall -timeout prints "TIMEOUT ..."
// on stderr and exits with status 3.
//
// # Payload
//
// Byte stream = SHA-256("kcpgo-interop" || uint64_le(0)) ||
// SHA-256("kcpgo-interop" || uint64_le(1)) || ..., truncated to N bytes
// (i.e. SHA-256 in counter mode, 32 bytes per block, block index as a
// little-endian 64-bit integer appended to the 13-byte ASCII prefix).
// tests/support/gopeer.py:payload() generates the same bytes.
//
// # Keys
//
// As kcptun: pass = PBKDF2-HMAC-SHA1(-key, salt "kcp-go", 4096 iterations,
// 32 bytes), then sliced per cipher name (docs/protocol.md §4.7). Unlike kcptun an
// unknown -crypt name is an error (kcptun silently falls back to aes), and the
// empty name means "no BlockCrypt at all" (no crypto header on the wire).
package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go"
	"golang.org/x/crypto/pbkdf2"
)

// writeChunk is the size of each client Write call.
const writeChunk = 64 * 1024

// payloadPrefix is hashed together with the block counter to build the payload.
const payloadPrefix = "kcpgo-interop"

// config holds the parsed command line.
type config struct {
	mode       string        // -mode: "server" or "client"
	addr       string        // -addr: listen address (server) or address to dial (client)
	crypt      string        // -crypt: kcptun cipher name, "" = no BlockCrypt
	key        string        // -key: kcptun passphrase
	ds, ps     int           // -ds, -ps: FEC data / parity shards (0 0 = no FEC)
	nodelay    [4]int        // -nodelay: nodelay, interval, resend, nc
	mtu        int           // -mtu
	sndwnd     int           // -sndwnd
	rcvwnd     int           // -rcvwnd
	stream     bool          // -stream: stream mode instead of message mode
	acknodelay bool          // -acknodelay
	nbytes     int           // -bytes: payload size each way
	sockbuf    int           // -sockbuf: SO_RCVBUF / SO_SNDBUF
	timeout    time.Duration // -timeout: overall deadline
	sessions   int           // -sessions: server: sessions to serve before exiting
	linger     time.Duration // -linger: server: idle time after the last byte before closing
}

// progress counters, reported when the overall timeout fires.
var (
	progressSent     int64
	progressReceived int64
)

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fatalf("%v", err)
	}

	// Overall deadline: whatever is still running when it fires is a failure.
	time.AfterFunc(cfg.timeout, func() {
		fmt.Fprintf(os.Stderr, "TIMEOUT after %v (mode %s: sent %d, received %d bytes)\n",
			cfg.timeout, cfg.mode, atomic.LoadInt64(&progressSent), atomic.LoadInt64(&progressReceived))
		os.Exit(3)
	})

	block, err := newBlockCrypt(cfg.crypt, cfg.key)
	if err != nil {
		fatalf("crypt %q: %v", cfg.crypt, err)
	}

	switch cfg.mode {
	case "server":
		err = runServer(cfg, block)
	case "client":
		err = runClient(cfg, block)
	}
	if err != nil {
		fatalf("%v", err)
	}
}

func parseFlags() (*config, error) {
	cfg := new(config)
	var nodelay string
	var timeoutSec, lingerSec float64
	flag.StringVar(&cfg.mode, "mode", "", "server or client")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:0", "server: listen address (port 0 allowed); client: server address")
	flag.StringVar(&cfg.crypt, "crypt", "", `kcptun cipher name (aes, aes-128, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea, xor, sm4, none); "" = no BlockCrypt at all`)
	flag.StringVar(&cfg.key, "key", "it's a secrect", "kcptun passphrase (PBKDF2-SHA1, salt \"kcp-go\", 4096 iterations, 32 bytes)")
	flag.IntVar(&cfg.ds, "ds", 0, "FEC data shards")
	flag.IntVar(&cfg.ps, "ps", 0, "FEC parity shards")
	flag.StringVar(&nodelay, "nodelay", "1,10,2,1", "SetNoDelay arguments: nodelay,interval,resend,nc")
	flag.IntVar(&cfg.mtu, "mtu", 1400, "SetMtu")
	flag.IntVar(&cfg.sndwnd, "sndwnd", 1024, "SetWindowSize send window")
	flag.IntVar(&cfg.rcvwnd, "rcvwnd", 1024, "SetWindowSize receive window")
	flag.BoolVar(&cfg.stream, "stream", false, "SetStreamMode(true) (default: message mode)")
	flag.BoolVar(&cfg.acknodelay, "acknodelay", false, "SetACKNoDelay(true)")
	flag.IntVar(&cfg.nbytes, "bytes", 1<<20, "payload size each way")
	flag.IntVar(&cfg.sockbuf, "sockbuf", 4194304, "socket SO_RCVBUF/SO_SNDBUF (client: session, server: listener)")
	flag.Float64Var(&timeoutSec, "timeout", 60, "overall deadline in seconds")
	flag.IntVar(&cfg.sessions, "sessions", 1, "server: number of sessions to serve before exiting")
	flag.Float64Var(&lingerSec, "linger", 3, "server: seconds without data after the last expected byte before closing a session")
	flag.Parse()

	if flag.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", flag.Args())
	}
	if cfg.mode != "server" && cfg.mode != "client" {
		return nil, fmt.Errorf("-mode must be server or client, got %q", cfg.mode)
	}
	parts := strings.Split(nodelay, ",")
	if len(parts) != 4 {
		return nil, fmt.Errorf("-nodelay wants 4 comma-separated integers, got %q", nodelay)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("-nodelay %q: %v", nodelay, err)
		}
		cfg.nodelay[i] = v
	}
	if cfg.nbytes < 1 || cfg.sessions < 1 || timeoutSec <= 0 || lingerSec < 0 {
		return nil, fmt.Errorf("need -bytes >= 1, -sessions >= 1, -timeout > 0, -linger >= 0")
	}
	cfg.timeout = time.Duration(timeoutSec * float64(time.Second))
	cfg.linger = time.Duration(lingerSec * float64(time.Second))
	return cfg, nil
}

// newBlockCrypt derives the key and builds the cipher exactly like kcptun
// (docs/protocol.md §4.7). The empty name returns a nil BlockCrypt (no crypto
// header at all); "none" is kcp-go's identity cipher with the 20-byte header.
func newBlockCrypt(name, passphrase string) (kcp.BlockCrypt, error) {
	if name == "" {
		return nil, nil
	}
	pass := pbkdf2.Key([]byte(passphrase), []byte("kcp-go"), 4096, 32, sha1.New)
	switch name {
	case "aes":
		return kcp.NewAESBlockCrypt(pass) // AES-256
	case "aes-128":
		return kcp.NewAESBlockCrypt(pass[:16])
	case "aes-192":
		return kcp.NewAESBlockCrypt(pass[:24])
	case "salsa20":
		return kcp.NewSalsa20BlockCrypt(pass)
	case "blowfish":
		return kcp.NewBlowfishBlockCrypt(pass)
	case "twofish":
		return kcp.NewTwofishBlockCrypt(pass)
	case "cast5":
		return kcp.NewCast5BlockCrypt(pass[:16])
	case "3des":
		return kcp.NewTripleDESBlockCrypt(pass[:24])
	case "tea":
		return kcp.NewTEABlockCrypt(pass[:16])
	case "xtea":
		return kcp.NewXTEABlockCrypt(pass[:16])
	case "xor":
		return kcp.NewSimpleXORBlockCrypt(pass)
	case "sm4":
		return kcp.NewSM4BlockCrypt(pass[:16])
	case "none":
		return kcp.NewNoneBlockCrypt(pass)
	}
	return nil, fmt.Errorf("unknown cipher name")
}

// configure applies the per-session settings kcptun applies (both sides).
func configure(s *kcp.UDPSession, cfg *config) error {
	s.SetStreamMode(cfg.stream)
	s.SetWriteDelay(false)
	s.SetNoDelay(cfg.nodelay[0], cfg.nodelay[1], cfg.nodelay[2], cfg.nodelay[3])
	s.SetWindowSize(cfg.sndwnd, cfg.rcvwnd)
	if !s.SetMtu(cfg.mtu) {
		return fmt.Errorf("SetMtu(%d) refused", cfg.mtu)
	}
	s.SetACKNoDelay(cfg.acknodelay)
	return nil
}

// payload returns the first n bytes of the SHA-256 counter-mode stream
// described in the package comment.
func payload(n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var in [len(payloadPrefix) + 8]byte
	copy(in[:], payloadPrefix)
	for i := uint64(0); len(out) < n; i++ {
		binary.LittleEndian.PutUint64(in[len(payloadPrefix):], i)
		sum := sha256.Sum256(in[:])
		out = append(out, sum[:]...)
	}
	return out[:n]
}

// ---------------------------------------------------------------- client

func runClient(cfg *config, block kcp.BlockCrypt) error {
	s, err := kcp.DialWithOptions(cfg.addr, block, cfg.ds, cfg.ps)
	if err != nil {
		return fmt.Errorf("dial %s: %v", cfg.addr, err)
	}
	defer s.Close()
	if err := configure(s, cfg); err != nil {
		return err
	}
	if err := s.SetReadBuffer(cfg.sockbuf); err != nil {
		fmt.Fprintf(os.Stderr, "warning: SetReadBuffer: %v\n", err)
	}
	if err := s.SetWriteBuffer(cfg.sockbuf); err != nil {
		fmt.Fprintf(os.Stderr, "warning: SetWriteBuffer: %v\n", err)
	}

	data := payload(cfg.nbytes)

	// Reader: collect the echo until N bytes came back.
	echo := make([]byte, 0, cfg.nbytes)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64*1024)
		for len(echo) < cfg.nbytes {
			n, err := s.Read(buf)
			if n > 0 {
				if len(echo)+n > cfg.nbytes {
					readErr <- fmt.Errorf("echo longer than sent: %d > %d bytes", len(echo)+n, cfg.nbytes)
					return
				}
				echo = append(echo, buf[:n]...)
				atomic.StoreInt64(&progressReceived, int64(len(echo)))
			}
			if err != nil {
				readErr <- fmt.Errorf("read after %d echoed bytes: %v", len(echo), err)
				return
			}
		}
		readErr <- nil
	}()

	// Writer: N bytes in 64 KiB Write calls.
	for off := 0; off < len(data); off += writeChunk {
		end := off + writeChunk
		if end > len(data) {
			end = len(data)
		}
		if _, err := s.Write(data[off:end]); err != nil {
			return fmt.Errorf("write after %d bytes: %v", off, err)
		}
		atomic.StoreInt64(&progressSent, int64(end))
	}
	sent := sha256.Sum256(data)
	fmt.Printf("SENT %d %s\n", len(data), hex.EncodeToString(sent[:]))

	if err := <-readErr; err != nil {
		return err
	}
	got := sha256.Sum256(echo)
	fmt.Printf("ECHOED %d %s\n", len(echo), hex.EncodeToString(got[:]))
	if !bytes.Equal(echo, data) {
		i := 0
		for i < len(echo) && echo[i] == data[i] {
			i++
		}
		return fmt.Errorf("MISMATCH: echo differs from sent data at offset %d", i)
	}
	return nil
}

// ---------------------------------------------------------------- server

func runServer(cfg *config, block kcp.BlockCrypt) error {
	l, err := kcp.ListenWithOptions(cfg.addr, block, cfg.ds, cfg.ps)
	if err != nil {
		return fmt.Errorf("listen %s: %v", cfg.addr, err)
	}
	defer l.Close()
	if err := l.SetReadBuffer(cfg.sockbuf); err != nil {
		fmt.Fprintf(os.Stderr, "warning: listener SetReadBuffer: %v\n", err)
	}
	if err := l.SetWriteBuffer(cfg.sockbuf); err != nil {
		fmt.Fprintf(os.Stderr, "warning: listener SetWriteBuffer: %v\n", err)
	}
	fmt.Printf("LISTENING %s\n", l.Addr())

	var printMu sync.Mutex // one stdout line at a time
	done := make(chan error)
	go func() {
		for {
			s, err := l.AcceptKCP()
			if err != nil {
				done <- fmt.Errorf("accept: %v", err)
				return
			}
			go func() {
				served, err := serveSession(s, cfg, &printMu)
				if err != nil {
					done <- fmt.Errorf("session %s conv %08x: %v", s.RemoteAddr(), s.GetConv(), err)
				} else if served {
					done <- nil
				}
			}()
		}
	}()

	for completed := 0; completed < cfg.sessions; completed++ {
		if err := <-done; err != nil {
			return err
		}
	}
	return nil
}

// serveSession echoes one session. It returns served=false (and no error)
// for a session that never received a byte before going idle.
func serveSession(s *kcp.UDPSession, cfg *config, printMu *sync.Mutex) (served bool, err error) {
	defer s.Close()
	if err := configure(s, cfg); err != nil {
		return false, err
	}

	var (
		h        hash.Hash = sha256.New()
		total    int
		reported bool
		buf      = make([]byte, 64*1024)
	)
	report := func() {
		reported = true
		printMu.Lock()
		fmt.Printf("RECEIVED %d %s\n", total, hex.EncodeToString(h.Sum(nil)))
		printMu.Unlock()
	}
	for {
		if reported {
			// Linger: stay open (ACKing, retransmitting our echo) until the
			// peer has been silent for cfg.linger.
			s.SetReadDeadline(time.Now().Add(cfg.linger))
		}
		n, err := s.Read(buf)
		if n > 0 {
			if total+n > cfg.nbytes {
				return true, fmt.Errorf("received more than -bytes %d (%d)", cfg.nbytes, total+n)
			}
			h.Write(buf[:n])
			total += n
			atomic.AddInt64(&progressReceived, int64(n))
			// Echo exactly what was read: in message mode one Read is one
			// message, so the echo keeps the message boundaries.
			if _, werr := s.Write(buf[:n]); werr != nil {
				return true, fmt.Errorf("write after %d bytes: %v", total, werr)
			}
			atomic.AddInt64(&progressSent, int64(n))
			if total == cfg.nbytes {
				report()
			}
		}
		if err != nil {
			if reported {
				return true, nil // linger expired (or session closed): done
			}
			if total == 0 && err == io.ErrClosedPipe {
				return false, nil
			}
			return total > 0, fmt.Errorf("read after %d bytes: %v", total, err)
		}
	}
}

func fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "peer: "+format+"\n", args...)
	os.Exit(1)
}
