package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"
)

// Summarize reads trace lines (as Flush writes them, from any number of
// invocations) and writes, per plugin, command and step, how many
// invocations had the step and its median start offset and duration, in
// order of the median start. Lines that are not trace lines are skipped.
func Summarize(r io.Reader, w io.Writer) error {
	type key struct{ plugin, cmd, step string }
	type acc struct{ at, us []int64 }
	steps := map[key]*acc{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var l Line
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Step == "" {
			continue
		}
		k := key{l.Plugin, l.Cmd, l.Step}
		a := steps[k]
		if a == nil {
			a = &acc{}
			steps[k] = a
		}
		a.at = append(a.at, l.At)
		a.us = append(a.us, l.US)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	keys := make([]key, 0, len(steps))
	for k := range steps {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.plugin != b.plugin {
			return a.plugin < b.plugin
		}
		if a.cmd != b.cmd {
			return a.cmd < b.cmd
		}
		ma, mb := Median(steps[a].at), Median(steps[b].at)
		if ma != mb {
			return ma < mb
		}
		return a.step < b.step
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "plugin\tcmd\tstep\t    n\tmedian start\t      median")
	for _, k := range keys {
		a := steps[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%5d\t%12s\t%12s\n", k.plugin, k.cmd, k.step, len(a.us), us(Median(a.at)), us(Median(a.us)))
	}
	return tw.Flush()
}

func us(v int64) string {
	return fmt.Sprintf("%.3f ms", float64(time.Duration(v)*time.Microsecond)/float64(time.Millisecond))
}

// Median of v (the mean of the middle two for an even count); 0 for none.
// It sorts a copy.
func Median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
