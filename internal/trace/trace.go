// Package trace records how long the steps of one plugin invocation take
// and writes them out when the process ends: PODNET_TRACE=FILE appends one
// JSON line per step to FILE, PODNET_TRACE=1 writes them to stderr.
//
// It owns only that recording and its output. It must not change what a
// plugin does: no step may fail, block or allocate because of it, and with
// PODNET_TRACE unset every call is a nil check (Begin returns the zero
// time, End and the rest return at once). It must not import any other
// podnet package (every layer imports it).
//
// Steps are spans (Begin ... End), not marks, because ADD runs its IPAM in
// a goroutine alongside the bridge's own steps: each line carries the
// step's start offset from the process's main ("at_us") and its duration
// ("us"), so overlapping steps stay apart. Two steps come from the process
// itself: "exec→init" (process start, from /proc/self/stat, to this
// package's initialisation; the kernel keeps the start in clock ticks, so it
// is only good to 1/CLK_TCK, usually 10 ms) and "init→main" (the package
// initialisation that runs after this package's, and the runtime, up to
// Start). As the first is coarse, "exec→main CPU" adds the CPU time
// (user + system, every thread, µs resolution) the process used before
// main: execve, page faults, runtime start and init. GODEBUG=inittrace=1
// breaks init down per package.
package trace

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Env is the environment variable that turns tracing on.
const Env = "PODNET_TRACE"

// loaded is when this package was initialised: as it imports little, the
// runtime initialises it before most of the binary's packages.
var loaded = time.Now()

// loadedBoot is loaded on CLOCK_BOOTTIME, the clock of /proc/self/stat's
// start time.
var loadedBoot = boottime()

func boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Line is one recorded step as written out.
type Line struct {
	PID    int    `json:"pid"`
	Plugin string `json:"plugin"`
	Cmd    string `json:"cmd"`
	Step   string `json:"step"`
	// At is the step's start, µs after Start (negative for the steps
	// before main).
	At int64 `json:"at_us"`
	// US is the step's duration in µs.
	US int64 `json:"us"`
}

type recorder struct {
	dest   string
	plugin string
	cmd    string
	main   time.Time
	mu     sync.Mutex
	lines  []Line
}

// rec is nil unless Start found PODNET_TRACE set.
var rec *recorder

// Start turns tracing on for this process if PODNET_TRACE is set, naming
// the invocation by plugin and CNI_COMMAND, and records the steps before
// main. Call it first thing in main, once.
func Start(plugin string) {
	dest := os.Getenv(Env)
	if dest == "" || dest == "0" {
		return
	}
	now := time.Now()
	r := &recorder{dest: dest, plugin: plugin, cmd: os.Getenv("CNI_COMMAND"), main: now}
	if st, ok := processStart(); ok && loadedBoot > st {
		d := loadedBoot - st
		r.add("exec→init", loaded.Add(-d), d)
	}
	r.add("init→main", loaded, now.Sub(loaded))
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.add("exec→main CPU (rusage, all threads)", now.Add(-cpu), cpu)
	}
	rec = r
}

// On reports whether tracing is on.
func On() bool { return rec != nil }

// Begin returns the start of a step (the zero time when tracing is off).
func Begin() time.Time {
	if rec == nil {
		return time.Time{}
	}
	return time.Now()
}

// End records step as running from t (a Begin) until now. Safe from any
// goroutine.
func End(step string, t time.Time) {
	if rec == nil || t.IsZero() {
		return
	}
	rec.add(step, t, time.Since(t))
}

// Span is Begin for a deferred End: defer trace.Span("step")().
func Span(step string) func() {
	if rec == nil {
		return nop
	}
	t := time.Now()
	return func() { End(step, t) }
}

func nop() {}

func (r *recorder) add(step string, t time.Time, d time.Duration) {
	l := Line{Plugin: r.plugin, Cmd: r.cmd, Step: step, At: t.Sub(r.main).Microseconds(), US: d.Microseconds()}
	r.mu.Lock()
	r.lines = append(r.lines, l)
	r.mu.Unlock()
}

// Flush records "main→exit" (Start to now) and writes every step, one
// JSON line each, in one write (so concurrent plugin processes appending
// to the same file do not interleave). Errors are ignored: tracing never
// fails an invocation. Call it once, last thing before the process exits.
func Flush() {
	r := rec
	if r == nil {
		return
	}
	r.add("main→exit", r.main, time.Since(r.main))
	r.mu.Lock()
	lines := r.lines
	r.lines = nil
	r.mu.Unlock()
	var buf bytes.Buffer
	pid := os.Getpid()
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range lines {
		lines[i].PID = pid
		_ = enc.Encode(&lines[i])
	}
	if r.dest == "1" {
		_, _ = os.Stderr.Write(buf.Bytes())
		return
	}
	f, err := os.OpenFile(r.dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	_, _ = f.Write(buf.Bytes())
	_ = f.Close()
}

// processStart returns the process's start on CLOCK_BOOTTIME from
// /proc/self/stat (field 22, clock ticks since boot).
func processStart() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	return parseStart(string(b), clockTicks)
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every
// architecture Go supports.
const clockTicks = 100

// parseStart reads field 22 of a /proc/PID/stat line. The command name
// (field 2) is in parentheses and may hold spaces, so fields are counted
// after its closing parenthesis.
func parseStart(stat string, hz int64) (time.Duration, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, false
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil || ticks < 0 {
		return 0, false
	}
	return time.Duration(ticks) * time.Second / time.Duration(hz), true
}
