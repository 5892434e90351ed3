package policykernel

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
)

// Writer programs table inet podnet-policy in one network namespace. Its
// methods may be called from any goroutine; they are serialized.
type Writer struct {
	mu  sync.Mutex
	ns  int // our own descriptor of the namespace
	log *slog.Logger
	// applied is what the kernel holds; nil when unknown (a failed
	// batch whose aftermath could not be read, or an Apply that ended
	// early after its desired state took the maps over): the next
	// Apply reads it.
	applied *state
	// sigs are the rule signatures of the profiles last applied, by
	// name (a profile never changes: a changed one has a new name).
	sigs map[string]string
	// logGroup is the NFLOG group of dropped packets, -1 for none.
	logGroup int
}

// Option configures a Writer.
type Option func(*Writer)

// WithNFLOG makes every profile chain log what it drops to NFLOG group
// group, at most 10 packets a second per chain (burst 5), with the chain
// name as prefix: the rule `limit rate 10/second log prefix "<chain>"
// group <group>` before the counter drop. A table programmed with another
// group (or none) gets its profile chains' rules rewritten on the first Apply,
// which resets their drop counters.
func WithNFLOG(group uint16) Option {
	return func(w *Writer) { w.logGroup = int(group) }
}

// Open connects to nftables in the namespace nsFd refers to (-1: the
// calling thread's namespace, fixed now), and adopts table inet
// podnet-policy if it exists: its maps, chains, sets and their elements become
// the applied state that the first Apply diffs against. Nothing is
// changed in the kernel. The Writer keeps its own duplicate of nsFd.
func Open(nsFd int, log *slog.Logger, opts ...Option) (*Writer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fd, err := nsDescriptor(nsFd)
	if err != nil {
		return nil, err
	}
	w := &Writer{ns: fd, log: log, logGroup: -1}
	for _, o := range opts {
		o(w)
	}
	s, err := w.read()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	w.applied = s
	if s.table {
		n := 0
		for _, m := range s.maps {
			n += len(m)
		}
		log.Info("adopted existing policy table", "table", TableName, "chains", len(s.chains), "sets", len(s.sets), "mapElements", n)
	}
	return w, nil
}

func nsDescriptor(nsFd int) (int, error) {
	if nsFd >= 0 {
		fd, err := unix.FcntlInt(uintptr(nsFd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("duplicate netns descriptor: %w", err)
		}
		return fd, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open current netns: %w", err)
	}
	return fd, nil
}

// Close releases the namespace descriptor. The table stays as it is.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ns < 0 {
		return nil
	}
	err := unix.Close(w.ns)
	w.ns = -1
	return err
}

// Apply makes the table hold rs, sending only the difference to the
// applied state: first, when there are new sets or profile chains, a
// batch that makes them (nothing uses them yet), then one atomic batch
// with everything that changes what packets see. On a kernel error the
// batch changed nothing; the Writer re-reads the table so the next Apply
// diffs against the truth.
func (w *Writer) Apply(rs policy.Ruleset) (Stats, error) {
	start := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ns < 0 {
		return Stats{}, errors.New("policykernel: writer closed")
	}
	want, err := desired(&rs, w.applied, w.sigs, w.logGroup)
	if err != nil {
		return Stats{}, fmt.Errorf("policykernel: ruleset for node %q: %w", rs.Node, err)
	}
	// want may have taken the applied state's maps over: if this Apply
	// ends without either applying want or reading the table again,
	// the applied state is forgotten (the next Apply reads the table).
	applied := false
	defer func() {
		if !applied && w.applied != nil && want.baseID != 0 && w.applied.mapsID == want.baseID {
			w.applied = nil
		}
	}()
	if w.applied == nil {
		s, err := w.read()
		if err != nil {
			return Stats{}, err
		}
		w.applied = s
	}
	var st Stats
	b, err := w.newBatch(&rs)
	if err != nil {
		return Stats{}, err
	}
	if mid := b.prepare(w.applied, want); mid != nil {
		if err := w.send(b); err != nil {
			// Committed all the same (acks lost): the table read
			// again has what the batch made.
			if w.applied == nil {
				return Stats{}, err
			}
			if !landed(w.applied, mid, b) {
				return Stats{}, err
			}
			w.log.Warn("policy batch reported an error but is in the kernel", "err", err)
			mid = w.applied
		}
		st = b.st
		st.Batches = 1
		w.applied = mid
		if b, err = w.newBatch(&rs); err != nil {
			return st, err
		}
	}
	b.plan(w.applied, want)
	if b.err != nil {
		return st, b.err
	}
	if b.st.Messages > 0 {
		if err := w.send(b); err != nil {
			// An error after the commit (acks lost to a full socket
			// buffer) leaves the table as wanted: then nothing is
			// left to do.
			if w.applied == nil {
				return st, err
			}
			if left, perr := w.pending(&rs, w.applied, want); perr != nil || left != 0 {
				return st, err
			}
			w.log.Warn("policy batch reported an error but is in the kernel", "err", err)
		}
		st = st.plus(b.st)
		st.Batches++
	}
	w.applied, applied = want, true
	w.sigs = make(map[string]string, len(want.chains))
	for n, cs := range want.chains {
		w.sigs[n] = cs.sig
	}
	st.Duration = time.Since(start)
	if st.Changed() {
		w.log.Debug("policy table applied", "node", rs.Node, "pods", len(rs.Pods), "profiles", len(rs.Profiles),
			"added", st.ElementsAdded, "removed", st.ElementsRemoved, "chainsAdded", st.ChainsAdded, "chainsRemoved", st.ChainsRemoved,
			"setsAdded", st.SetsAdded, "setsRemoved", st.SetsRemoved, "batches", st.Batches, "messages", st.Messages, "duration", st.Duration)
	}
	return st, nil
}

// newBatch returns an empty batch on a connection whose socket buffers
// are sized for the batch when it is sent.
func (w *Writer) newBatch(rs *policy.Ruleset) (*batch, error) {
	b := &batch{log: w.log, logGroup: w.logGroup, rs: rs, addrSets: addrSetsOf(rs)}
	c, err := nftables.New(nftables.WithNetNSFd(w.ns), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		snd, rcv := bufferSizes(b.st.Messages, b.bytes)
		return setBuffers(nc, snd, rcv)
	}))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	b.c = c
	return b, nil
}

// send sends b. On an error the table is read again (w.applied is what
// the kernel holds, nil if that failed too).
func (w *Writer) send(b *batch) error {
	if b.err != nil {
		return b.err
	}
	if err := b.c.Flush(); err != nil {
		ferr := fmt.Errorf("nftables: apply table %s (%d messages): %w", TableName, b.st.Messages, err)
		s, rerr := w.read()
		w.applied = s
		return errors.Join(ferr, rerr)
	}
	return nil
}

// pending returns how many messages a batch from have to want would
// have (the batch is planned, never sent).
func (w *Writer) pending(rs *policy.Ruleset, have, want *state) (int, error) {
	c, err := nftables.New(nftables.WithNetNSFd(w.ns))
	if err != nil {
		return 0, err
	}
	b := &batch{c: c, log: w.log, logGroup: w.logGroup, rs: rs, addrSets: addrSetsOf(rs)}
	if mid := b.prepare(have, want); mid != nil {
		return b.st.Messages, b.err
	}
	b.plan(have, want)
	return b.st.Messages, b.err
}

// landed reports whether s, the table read after an error, holds what
// the preparatory batch b was to make (mid).
func landed(s, mid *state, b *batch) bool {
	for _, n := range b.made {
		if hs, cs := s.sets[n], s.chains[n]; (hs == nil || hs.bad || len(hs.els) != len(mid.sets[n].els)) && (cs == nil || cs.sig != mid.chains[n].sig) {
			return false
		}
	}
	return true
}

func addrSetsOf(rs *policy.Ruleset) map[string]*policy.AddrSet {
	m := make(map[string]*policy.AddrSet, len(rs.AddrSets))
	for i := range rs.AddrSets {
		m[rs.AddrSets[i].Name] = &rs.AddrSets[i]
	}
	return m
}

// bufferSizes returns the socket buffer sizes for a batch of messages
// and about bytes: the whole batch is one sendmsg, and the kernel queues
// every message's ack before we read one (each costs about a kilobyte of
// receive space whatever its size); the defaults hold a few hundred
// messages. A variable for tests.
var bufferSizes = func(messages, bytes int) (snd, rcv int) {
	return max(2*bytes, 1<<20), max(4*messages*1024, 1<<20)
}

// setBuffers sets the socket's buffer sizes; as root the limits of
// net.core.[rw]mem_max do not apply.
func setBuffers(nc *netlink.Conn, snd, rcv int) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain, size int }{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, snd}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcv}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, o.size); e != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, o.size); e != nil {
					serr = e
				}
			}
		}
	})
	return errors.Join(err, serr)
}

// Dropped returns, for each profile chain that drops, the packets it has
// dropped (its final counter drop and its Deny rules' counters, summed),
// keyed by chain name (ingress-<H>, egress-<H>). A chain that goes on to
// another (Next) does not count what that one drops; an Open chain without
// Deny rules, which drops nothing, is absent.
func (w *Writer) Dropped() (map[string]uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ns < 0 {
		return nil, errors.New("policykernel: writer closed")
	}
	var names []string
	if w.applied != nil {
		for n, cs := range w.applied.chains {
			if cs != nil && isProfileChain(n) {
				names = append(names, n)
			}
		}
	}
	dump, err := w.dumpRules(names)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(names))
	for _, n := range names {
		if p, ok := droppedBy(dump[n]); ok {
			out[n] = p
		}
	}
	return out, nil
}
