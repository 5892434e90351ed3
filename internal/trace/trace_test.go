package trace

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// reset turns tracing off again after a test.
func reset(t *testing.T) {
	t.Cleanup(func() { rec = nil })
}

func TestOffIsNop(t *testing.T) {
	reset(t)
	t.Setenv(Env, "")
	Start("bridge")
	if On() {
		t.Fatal("On() with PODNET_TRACE unset")
	}
	if b := Begin(); !b.IsZero() {
		t.Errorf("Begin() = %v, want the zero time", b)
	}
	End("x", time.Now())
	Span("y")()
	Flush()
	if allocs := testing.AllocsPerRun(100, func() {
		t0 := Begin()
		End("step", t0)
		Span("span")()
	}); allocs != 0 {
		t.Errorf("off: %v allocations per step, want 0", allocs)
	}
}

func TestFileLines(t *testing.T) {
	reset(t)
	f := filepath.Join(t.TempDir(), "trace.jsonl")
	t.Setenv(Env, f)
	t.Setenv("CNI_COMMAND", "ADD")
	Start("bridge")
	if !On() {
		t.Fatal("On() = false with PODNET_TRACE set")
	}
	t0 := Begin()
	time.Sleep(2 * time.Millisecond)
	End("sleep", t0)
	done := make(chan struct{})
	go func() { defer close(done); defer Span("goroutine")() }()
	<-done
	Flush()
	Flush() // a second Flush writes only the new main→exit line

	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Line{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	n := 0
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		n++
		got[l.Step] = l
		if l.PID != os.Getpid() || l.Plugin != "bridge" || l.Cmd != "ADD" {
			t.Errorf("line %+v: want pid %d, plugin bridge, cmd ADD", l, os.Getpid())
		}
	}
	for _, s := range []string{"init→main", "sleep", "goroutine", "main→exit"} {
		if _, ok := got[s]; !ok {
			t.Errorf("no %q line in\n%s", s, b)
		}
	}
	if s := got["sleep"]; s.US < 2000 || s.At < 0 {
		t.Errorf("sleep = %+v, want >= 2000 µs at a non-negative offset", s)
	}
	if s := got["init→main"]; s.At > 0 {
		t.Errorf("init→main starts at %d µs, want <= 0 (before main)", s.At)
	}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		if s, ok := got["exec→init"]; !ok || s.US <= 0 {
			t.Errorf("exec→init = %+v, %v; want a positive duration", s, ok)
		}
	}
	if _, ok := got["exec→main CPU (rusage, all threads)"]; !ok {
		t.Errorf("no exec→main CPU line in\n%s", b)
	}
	if n != 7 { // exec→init, init→main, exec→main CPU, sleep, goroutine, main→exit twice
		t.Errorf("%d lines, want 7:\n%s", n, b)
	}
}

func TestParseStart(t *testing.T) {
	// A command name with spaces and parentheses, as the kernel prints it.
	stat := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615"
	d, ok := parseStart(stat, 100)
	if !ok || d != 1234560*time.Millisecond {
		t.Errorf("parseStart = %v, %v; want 1234.56s, true", d, ok)
	}
	for _, bad := range []string{"", "1 (x) S 1", "1 (x" + strings.Repeat(" 1", 30)} {
		if _, ok := parseStart(bad, 100); ok {
			t.Errorf("parseStart(%q) ok, want not", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	in := `{"pid":1,"plugin":"bridge","cmd":"ADD","step":"b","at_us":100,"us":10}
{"pid":1,"plugin":"bridge","cmd":"ADD","step":"a","at_us":0,"us":1000}
not json
{"pid":2,"plugin":"bridge","cmd":"ADD","step":"a","at_us":0,"us":3000}
{"pid":2,"plugin":"bridge","cmd":"ADD","step":"b","at_us":200,"us":30}
{"pid":3,"plugin":"bridge","cmd":"ADD","step":"a","at_us":0,"us":2000}
`
	var out strings.Builder
	if err := Summarize(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want header + 2:\n%s", len(lines), out.String())
	}
	if f := strings.Fields(lines[1]); f[2] != "a" || f[3] != "3" || f[len(f)-2] != "2.000" {
		t.Errorf("first row %q: want step a, n 3, median 2.000 ms", lines[1])
	}
	if f := strings.Fields(lines[2]); f[2] != "b" || f[3] != "2" || f[len(f)-2] != "0.020" {
		t.Errorf("second row %q: want step b, n 2, median 0.020 ms", lines[2])
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []int64
		want int64
	}{{nil, 0}, {[]int64{5}, 5}, {[]int64{3, 1, 2}, 2}, {[]int64{4, 1, 3, 2}, 2}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}
