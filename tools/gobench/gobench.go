// Command gobench is the kcp-go (and plain TCP) side of kcpgo's benchmark, python -m kcpgo
// bench (kcpgo/cli/bench.py; tools/bench.py runs it too).
//
// It speaks the same small protocol as kcpgo's ends (kcpgo/cli/bench_role.py), so either end
// of every benchmark can be kcp-go 5.6.1, kcpgo, or TCP. The server prints "LISTENING
// ip:port" once bound; both sides print one JSON object on their last stdout line. With
// -sample S > 0, the end that counts the mode's progress (the sink server: bytes received;
// the echo client: bytes echoed; the ping client: round trips) also prints
// "SAMPLE <seconds> <count>" about every S seconds, cumulative, seconds from its first byte
// (sink) or its start (echo, ping); the tool draws progress and throughput from them.
//
// Modes (-mode):
//
//	sink  client writes -size byte buffers for -duration seconds (or exactly -bytes bytes);
//	      server reads and discards, reporting bytes and the time from its first to its last
//	      byte. A client write that makes no progress for -stall s ends the run as stalled: the
//	      client reports "stalled": true with its counters and exits with status 3.
//	echo  client writes and reads back concurrently for -duration; server echoes.
//	ping  client sends -size bytes and waits for the echo, -count times; reports RTTs (µs).
//	conc  client opens -sessions sessions, each sending -size bytes every -period seconds and
//	      reading the echo, for -duration; server echoes (runs until killed). -period 0: each
//	      session sends its next message as soon as the echo is in (saturation). Sessions
//	      start spread over -ramp seconds (default: -period); "window_messages" counts the
//	      echoes completed in the last "window_s" seconds of the run, from "up_s": the end of
//	      the ramp, or the first echo of the last session to get one ("sessions_up") if that
//	      was later. With -period 0 a session waits after its first echo until every session
//	      had one (or failed): the closed loops begin together, at "up_s". A session whose
//	      write or echo takes over -deadline seconds (default 10) ends as an error: "errors"
//	      counts them; "error_kinds" gives each kind's count, when it first happened and how
//	      long its calls had waited.
//
// Build in GOPATH mode (kcpgo/testing/golang.py does it for the benchmark):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gobench gobench.go
package main

import (
	"crypto/sha1"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go"
	"golang.org/x/crypto/pbkdf2"
)

type config struct {
	role, mode, addr, transport, crypt, key, nodelay string
	ds, ps, mtu, sndwnd, rcvwnd, sockbuf, size       int
	count, sessions                                  int
	bytes                                            int64
	stream                                           bool
	duration, period, ramp, idle, stall, sample      float64
	deadline                                         float64
}

// sampler prints "SAMPLE <seconds since start> <count>" at most every -sample seconds.
type sampler struct {
	every       time.Duration
	start, next time.Time
}

func newSampler(c *config, start time.Time) *sampler {
	return &sampler{every: time.Duration(c.sample * float64(time.Second)), start: start,
		next: start}
}

// tick reports count if -sample is on and the interval has passed (or final is set).
func (s *sampler) tick(now time.Time, count int64, final bool) {
	if s.every <= 0 || (!final && now.Before(s.next)) {
		return
	}
	s.next = now.Add(s.every)
	fmt.Printf("SAMPLE %.4f %d\n", now.Sub(s.start).Seconds(), count)
}

func main() {
	var c config
	flag.StringVar(&c.role, "role", "server", "server or client")
	flag.StringVar(&c.mode, "mode", "sink", "sink, echo, ping or conc")
	flag.StringVar(&c.addr, "addr", "127.0.0.1:0", "listen / dial address")
	flag.StringVar(&c.transport, "transport", "kcp", "kcp or tcp")
	flag.StringVar(&c.crypt, "crypt", "", "kcptun cipher name; empty = no BlockCrypt")
	flag.StringVar(&c.key, "key", "it's a secrect", "kcptun passphrase")
	flag.StringVar(&c.nodelay, "nodelay", "1,10,2,1", "nodelay,interval,resend,nc")
	flag.IntVar(&c.ds, "ds", 0, "FEC data shards")
	flag.IntVar(&c.ps, "ps", 0, "FEC parity shards")
	flag.IntVar(&c.mtu, "mtu", 1400, "MTU")
	flag.IntVar(&c.sndwnd, "sndwnd", 1024, "send window")
	flag.IntVar(&c.rcvwnd, "rcvwnd", 1024, "receive window")
	flag.IntVar(&c.sockbuf, "sockbuf", 4194304, "socket buffer bytes")
	flag.IntVar(&c.size, "size", 65536, "write size (sink/echo) or message size (ping/conc)")
	flag.IntVar(&c.count, "count", 2000, "ping: round trips")
	flag.IntVar(&c.sessions, "sessions", 100, "conc: sessions")
	flag.BoolVar(&c.stream, "stream", true, "KCP stream mode")
	flag.Float64Var(&c.duration, "duration", 5, "seconds to run (client)")
	flag.Int64Var(&c.bytes, "bytes", 0, "sink: send exactly this many bytes (0: for -duration)")
	flag.Float64Var(&c.period, "period", 1, "conc: seconds between messages of a session (0: closed loop)")
	flag.Float64Var(&c.ramp, "ramp", -1, "conc: seconds over which sessions start (-1: -period)")
	flag.Float64Var(&c.idle, "idle", 1, "server: exit after this long without data (sink/echo/ping)")
	flag.Float64Var(&c.stall, "stall", 10, "sink client: seconds without progress that make a stalled run")
	flag.Float64Var(&c.sample, "sample", 0, "seconds between SAMPLE progress lines (0: none)")
	flag.Float64Var(&c.deadline, "deadline", 10, "conc: seconds a message's write and echo may take (else an error)")
	flag.Parse()
	var err error
	if c.role == "server" {
		err = server(&c)
	} else {
		err = client(&c)
	}
	if err == errStalled {
		os.Exit(3) // reported on stdout: see clientSink
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobench:", err)
		os.Exit(1)
	}
}

func report(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// passCache holds each passphrase's PBKDF2 key: 4096 rounds of HMAC-SHA1 cost about 1 ms,
// which 5,000 conc sessions would otherwise pay one by one at their dial.
var passCache sync.Map

// blockCrypt builds kcptun's cipher for name from the passphrase (docs/protocol.md §4.7).
func blockCrypt(name, key string) (kcp.BlockCrypt, error) {
	if name == "" {
		return nil, nil
	}
	cached, ok := passCache.Load(key)
	if !ok {
		cached, _ = passCache.LoadOrStore(key, pbkdf2.Key([]byte(key), []byte("kcp-go"), 4096, 32, sha1.New))
	}
	pass := cached.([]byte)
	ctors := map[string]func() (kcp.BlockCrypt, error){
		"aes":      func() (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(pass) },
		"aes-128":  func() (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(pass[:16]) },
		"aes-192":  func() (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(pass[:24]) },
		"salsa20":  func() (kcp.BlockCrypt, error) { return kcp.NewSalsa20BlockCrypt(pass) },
		"blowfish": func() (kcp.BlockCrypt, error) { return kcp.NewBlowfishBlockCrypt(pass) },
		"twofish":  func() (kcp.BlockCrypt, error) { return kcp.NewTwofishBlockCrypt(pass) },
		"cast5":    func() (kcp.BlockCrypt, error) { return kcp.NewCast5BlockCrypt(pass[:16]) },
		"3des":     func() (kcp.BlockCrypt, error) { return kcp.NewTripleDESBlockCrypt(pass[:24]) },
		"tea":      func() (kcp.BlockCrypt, error) { return kcp.NewTEABlockCrypt(pass[:16]) },
		"xtea":     func() (kcp.BlockCrypt, error) { return kcp.NewXTEABlockCrypt(pass[:16]) },
		"xor":      func() (kcp.BlockCrypt, error) { return kcp.NewSimpleXORBlockCrypt(pass) },
		"sm4":      func() (kcp.BlockCrypt, error) { return kcp.NewSM4BlockCrypt(pass[:16]) },
		"none":     func() (kcp.BlockCrypt, error) { return kcp.NewNoneBlockCrypt(pass) },
	}
	ctor, ok := ctors[name]
	if !ok {
		return nil, fmt.Errorf("unknown cipher %q", name)
	}
	return ctor()
}

func configure(s *kcp.UDPSession, c *config, client bool) {
	nd := [4]int{1, 10, 2, 1}
	for i, f := range strings.Split(c.nodelay, ",") {
		if i < 4 {
			nd[i], _ = strconv.Atoi(f)
		}
	}
	s.SetStreamMode(c.stream)
	s.SetWriteDelay(false)
	s.SetNoDelay(nd[0], nd[1], nd[2], nd[3])
	s.SetWindowSize(c.sndwnd, c.rcvwnd)
	s.SetMtu(c.mtu)
	s.SetACKNoDelay(false)
	if client {
		s.SetReadBuffer(c.sockbuf)
		s.SetWriteBuffer(c.sockbuf)
	}
}

// ---------------------------------------------------------------- server

func server(c *config) error {
	var accept func() (net.Conn, error)
	if c.transport == "tcp" {
		l, err := net.Listen("tcp", c.addr)
		if err != nil {
			return err
		}
		fmt.Println("LISTENING", l.Addr().String())
		accept = l.Accept
	} else {
		block, err := blockCrypt(c.crypt, c.key)
		if err != nil {
			return err
		}
		l, err := kcp.ListenWithOptions(c.addr, block, c.ds, c.ps)
		if err != nil {
			return err
		}
		l.SetReadBuffer(c.sockbuf)
		l.SetWriteBuffer(c.sockbuf)
		fmt.Println("LISTENING", l.Addr().String())
		accept = func() (net.Conn, error) {
			s, err := l.AcceptKCP()
			if err == nil {
				configure(s, c, false)
			}
			return s, err
		}
	}
	if c.mode == "conc" {
		for {
			conn, err := accept()
			if err != nil {
				return err
			}
			go func() { io.Copy(conn, conn); conn.Close() }()
		}
	}
	conn, err := accept()
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var total int64
	var first, last time.Time
	var samples *sampler
	idle := time.Duration(c.idle * float64(time.Second))
	for {
		conn.SetReadDeadline(time.Now().Add(idle))
		n, err := conn.Read(buf)
		if n > 0 {
			now := time.Now()
			if total == 0 {
				first = now
				if c.mode == "sink" {
					samples = newSampler(c, now)
				}
			}
			last = now
			total += int64(n)
			if samples != nil {
				samples.tick(now, total, false)
			}
			if c.mode != "sink" {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					return werr
				}
			}
		}
		if err != nil {
			break // idle deadline (KCP has no FIN) or EOF (TCP)
		}
	}
	if samples != nil {
		samples.tick(last, total, true)
	}
	result := map[string]interface{}{"role": "server", "bytes": total,
		"seconds": last.Sub(first).Seconds()}
	if c.transport != "tcp" {
		result["snmp"] = kcp.DefaultSnmp.Copy()
	}
	report(result)
	return nil
}

// ---------------------------------------------------------------- client

func dial(c *config) (net.Conn, error) {
	if c.transport == "tcp" {
		return net.Dial("tcp", c.addr)
	}
	block, err := blockCrypt(c.crypt, c.key)
	if err != nil {
		return nil, err
	}
	s, err := kcp.DialWithOptions(c.addr, block, c.ds, c.ps)
	if err != nil {
		return nil, err
	}
	configure(s, c, true)
	return s, nil
}

func client(c *config) error {
	switch c.mode {
	case "sink":
		return clientSink(c)
	case "echo":
		return clientEcho(c)
	case "ping":
		return clientPing(c)
	case "conc":
		return clientConc(c)
	}
	return fmt.Errorf("unknown mode %q", c.mode)
}

// errStalled: the client made no progress for -stall seconds; it printed its report and
// exits with status 3.
var errStalled = errors.New("stalled")

func clientSink(c *config) error {
	conn, err := dial(c)
	if err != nil {
		return err
	}
	buf := make([]byte, c.size)
	start := time.Now()
	end := start.Add(time.Duration(c.duration * float64(time.Second)))
	var sent int64
	progress := start
	for (c.bytes == 0 && time.Now().Before(end)) || (c.bytes > 0 && sent < c.bytes) {
		chunk := buf
		if c.bytes > 0 && c.bytes-sent < int64(len(buf)) {
			chunk = buf[:c.bytes-sent]
		}
		deadline := time.Now().Add(time.Duration(c.stall * float64(time.Second)))
		conn.SetWriteDeadline(deadline)
		n, err := conn.Write(chunk)
		sent += int64(n)
		if err != nil && !time.Now().Before(deadline) {
			// Stalled: say how far it got, with kcp-go's counters, for tools/bench.py.
			now := time.Now()
			result := map[string]interface{}{"role": "client", "bytes": sent,
				"stalled": true, "stalled_s": now.Sub(progress).Seconds(),
				"elapsed": now.Sub(start).Seconds(), "error": err.Error()}
			if c.transport != "tcp" {
				result["snmp"] = kcp.DefaultSnmp.Copy()
			}
			report(result)
			fmt.Fprintf(os.Stderr, "gobench: stalled: no progress for %.1f s after %d bytes\n",
				now.Sub(progress).Seconds(), sent)
			return errStalled
		}
		if err != nil {
			return err
		}
		progress = time.Now()
	}
	time.Sleep(500 * time.Millisecond) // let the tail go out before Close drops it
	conn.Close()
	report(map[string]interface{}{"role": "client", "bytes": sent})
	return nil
}

func clientEcho(c *config) error {
	conn, err := dial(c)
	if err != nil {
		return err
	}
	buf := make([]byte, c.size)
	var echoed int64
	done := make(chan struct{})
	start := time.Now()
	go func() {
		rb := make([]byte, 1<<20)
		samples := newSampler(c, start)
		for {
			n, err := conn.Read(rb)
			samples.tick(time.Now(), atomic.AddInt64(&echoed, int64(n)), false)
			if err != nil {
				close(done)
				return
			}
		}
	}()
	end := start.Add(time.Duration(c.duration * float64(time.Second)))
	var sent int64
	for time.Now().Before(end) {
		n, err := conn.Write(buf)
		if err != nil {
			return err
		}
		sent += int64(n)
	}
	for atomic.LoadInt64(&echoed) < sent && time.Since(end) < 10*time.Second {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	conn.Close()
	report(map[string]interface{}{"role": "client", "bytes": sent,
		"echoed": atomic.LoadInt64(&echoed), "seconds": elapsed})
	return nil
}

func clientPing(c *config) error {
	conn, err := dial(c)
	if err != nil {
		return err
	}
	msg := make([]byte, c.size)
	rb := make([]byte, c.size)
	rtts := make([]float64, 0, c.count)
	samples := newSampler(c, time.Now())
	for i := 0; i < c.count+20; i++ { // the first 20 warm up
		samples.tick(time.Now(), int64(i), false)
		t := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(conn, rb); err != nil {
			return err
		}
		if i >= 20 {
			rtts = append(rtts, float64(time.Since(t).Nanoseconds())/1e3)
		}
	}
	conn.Close()
	sort.Float64s(rtts)
	report(map[string]interface{}{"role": "client", "rtt_us": rtts})
	return nil
}

func clientConc(c *config) error {
	var wg sync.WaitGroup
	var msgs, errs, up, lastUp int64
	start := time.Now()
	// What failed, by kind ("read: timeout"): a count alone says nothing. The kind leaves out
	// what differs between sessions (addresses, how long the call waited); the waits are
	// kept as a range per kind.
	type errKind struct {
		count                    int64
		firstS, waitMin, waitMax float64
	}
	var kindsMu sync.Mutex
	kinds := map[string]*errKind{}
	fail := func(what string, began time.Time, err error) {
		atomic.AddInt64(&errs, 1)
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err // "read tcp A->B: read: connection reset by peer": the cause only
		}
		var sys *os.SyscallError
		if errors.As(err, &sys) {
			err = sys.Err
		}
		k := fmt.Sprintf("%s: %v", what, err)
		now := time.Now()
		waited := now.Sub(began).Seconds()
		kindsMu.Lock()
		e := kinds[k]
		if e == nil {
			e = &errKind{firstS: now.Sub(start).Seconds(), waitMin: waited, waitMax: waited}
			kinds[k] = e
		}
		e.count++
		if waited < e.waitMin {
			e.waitMin = waited
		}
		if waited > e.waitMax {
			e.waitMax = waited
		}
		kindsMu.Unlock()
	}
	lat := make([][]float64, c.sessions)
	period := time.Duration(c.period * float64(time.Second))
	ramp := period
	if c.ramp >= 0 {
		ramp = time.Duration(c.ramp * float64(time.Second))
	}
	end := start.Add(time.Duration(c.duration * float64(time.Second)))
	const slot = 100 * time.Millisecond
	done := make([]int64, int(end.Sub(start)/slot)+1) // echoes completed per slot
	// Closed loop: a session that had its first echo waits until every session has (or has
	// failed), so that 5,000 sessions are established before the load begins.
	var barrier int64
	gate := make(chan struct{})
	go func() {
		for atomic.LoadInt64(&up)+atomic.LoadInt64(&errs) < int64(c.sessions) &&
			time.Now().Before(end) {
			time.Sleep(10 * time.Millisecond)
		}
		atomic.StoreInt64(&barrier, int64(time.Since(start)))
		close(gate)
	}()
	for i := 0; i < c.sessions; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := dial(c)
			if err != nil {
				fail("dial", start, err)
				return
			}
			defer conn.Close()
			msg := make([]byte, c.size)
			rb := make([]byte, c.size)
			// Spread the sessions over the ramp so the load is steady.
			time.Sleep(time.Duration(int64(ramp) * int64(i) / int64(c.sessions)))
			next := time.Now()
			first := true
			for time.Now().Before(end) {
				t := time.Now()
				conn.SetDeadline(t.Add(time.Duration(c.deadline * float64(time.Second))))
				if _, err := conn.Write(msg); err != nil {
					fail("write", t, err)
					return
				}
				if _, err := io.ReadFull(conn, rb); err != nil {
					what := "read"
					if first {
						what = "first read"
					}
					fail(what, t, err)
					return
				}
				now := time.Now()
				lat[i] = append(lat[i], float64(now.Sub(t).Nanoseconds())/1e3)
				atomic.AddInt64(&msgs, 1)
				if now.Before(end) {
					atomic.AddInt64(&done[int(now.Sub(start)/slot)], 1)
				}
				if first {
					first = false
					atomic.AddInt64(&up, 1)
					for { // the latest first echo of any session
						old := atomic.LoadInt64(&lastUp)
						if int64(now.Sub(start)) <= old ||
							atomic.CompareAndSwapInt64(&lastUp, old, int64(now.Sub(start))) {
							break
						}
					}
					if period == 0 {
						<-gate
					}
				}
				next = next.Add(period)
				time.Sleep(time.Until(next))
			}
		}(i)
	}
	wg.Wait()
	var all []float64
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Float64s(all)
	p50 := 0.0
	if len(all) > 0 {
		p50 = all[len(all)/2]
	}
	// The window: from the end of the ramp, or from the first echo of the last session to get
	// one (closed loop: the opening of the gate) if that came later, to the end of the run.
	from := ramp
	if time.Duration(lastUp) > from {
		from = time.Duration(lastUp)
	}
	if period == 0 && time.Duration(atomic.LoadInt64(&barrier)) > from {
		from = time.Duration(atomic.LoadInt64(&barrier))
	}
	first := int((from + slot - 1) / slot)
	var window int64
	for k := first; k < len(done); k++ {
		window += done[k]
	}
	windowS := end.Sub(start.Add(time.Duration(first) * slot)).Seconds()
	if windowS < 0 {
		windowS = 0
	}
	kindsMu.Lock()
	errorKinds := []map[string]interface{}{}
	for k, e := range kinds {
		errorKinds = append(errorKinds, map[string]interface{}{"kind": k, "count": e.count,
			"first_s": e.firstS, "wait_min_s": e.waitMin, "wait_max_s": e.waitMax})
	}
	kindsMu.Unlock()
	report(map[string]interface{}{"role": "client", "messages": msgs, "errors": errs,
		"p50_us": p50, "window_messages": window, "window_s": windowS,
		"sessions_up": up, "up_s": from.Seconds(), "error_kinds": errorKinds})
	return nil
}
