package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuMark is a reading of the CPU time used by the whole machine (user,
// nice, system: not softirq, which the measured traffic itself causes and
// no process owns) and by the bench's own processes (this tool and its
// waited children such as iperf3 and the CNI plugins, the lab's agents
// and its etcd).
type cpuMark struct {
	at         time.Time
	all, ours  float64 // seconds
	steal      float64 // seconds the hypervisor gave this VM's CPUs to others
	ownPIDs    []int
	unreadable int
}

// clkTck is USER_HZ, 100 on Linux.
const clkTck = 100.0

func readCPU(own []int) (cpuMark, error) {
	m := cpuMark{at: time.Now(), ownPIDs: own}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return m, fmt.Errorf("/proc/stat: %q", line)
	}
	for _, s := range f[1:4] { // user nice system
		v, _ := strconv.ParseFloat(s, 64)
		m.all += v / clkTck
	}
	if len(f) > 8 {
		v, _ := strconv.ParseFloat(f[8], 64)
		m.steal = v / clkTck
	}
	for _, pid := range append([]int{os.Getpid()}, own...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			m.unreadable++
			continue
		}
		// Fields after the command (which may hold spaces) in ")".
		s := string(b)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// rest[0] is field 3 (state): utime..cstime are fields 14..17.
		if len(rest) < 15 {
			continue
		}
		for _, x := range rest[11:15] {
			v, _ := strconv.ParseFloat(x, 64)
			m.ours += v / clkTck
		}
	}
	return m, nil
}

// stealCores is the average number of cores the hypervisor took from this
// VM between a and b: noise the rule cannot see per process.
func stealCores(a, b cpuMark) float64 {
	d := b.at.Sub(a.at).Seconds()
	if d <= 0 {
		return 0
	}
	return (b.steal - a.steal) / d
}

// foreignCores is the average number of cores processes other than the
// bench's used between a and b.
func foreignCores(a, b cpuMark) float64 {
	d := b.at.Sub(a.at).Seconds()
	if d <= 0 {
		return 0
	}
	f := (b.all - a.all) - (b.ours - a.ours)
	return max(f, 0) / d
}
