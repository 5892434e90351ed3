package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/internal/netns"
)

// Down removes lab name: DEL of every pod through CNI (best effort), the
// agents and the etcd supervisor stopped, every pl-<name>-* namespace and
// the lab directory removed. It works from lab.json or, without one, from
// the names alone, and is a no-op for a lab that does not exist.
func Down(root, name string, out io.Writer) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if out == nil {
		out = io.Discard
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	dir := Dir(root, name)
	var errs []error
	l, lerr := Load(root, name)
	if lerr == nil && l.Kubernetes != nil {
		errs = append(errs, l.downKube(say)...)
	}
	if lerr == nil {
		// DEL pods while the node namespaces still exist.
		for _, p := range l.Pods {
			n := l.Node(p.Node)
			if n == nil || !netns.Exists(NetnsPath(n.Netns)) {
				continue
			}
			c := l.cni(n)
			list, err := c.Load(agent.NetworkName)
			if err != nil {
				continue // the agent never wrote one: no pod was added
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			if err := c.Del(ctx, list, l.attachment(p)); err != nil {
				errs = append(errs, fmt.Errorf("pod %s: CNI DEL: %w", p.Name, err))
			} else {
				say("pod %s: CNI DEL", p.Name)
			}
			cancel()
		}
	}
	// Processes: those recorded, and any whose command line names the lab
	// directory (an `up` that died before recording them).
	pids := map[int]bool{}
	if l != nil {
		for _, n := range l.Nodes {
			if n.AgentPID > 0 && isAgentBin(n.AgentPID) && cmdlineHas(n.AgentPID, dir+"/") {
				pids[n.AgentPID] = true
			}
		}
		if l.Etcd.PID > 0 && isAgentBin(l.Etcd.PID) && cmdlineHas(l.Etcd.PID, dir) {
			pids[l.Etcd.PID] = true
		}
	}
	for _, pid := range findProcs(dir) {
		pids[pid] = true
	}
	for pid := range pids {
		if err := stopPID(pid, syscall.SIGTERM, 10*time.Second); err != nil {
			errs = append(errs, err)
		} else {
			say("stopped pid %d", pid)
		}
	}
	// Namespaces.
	ents, _ := os.ReadDir(netns.RunDir)
	nsCount := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), nsPrefix(name)) {
			if err := netns.Delete(e.Name()); err != nil {
				errs = append(errs, err)
			} else {
				nsCount++
			}
		}
	}
	if nsCount > 0 {
		say("deleted %d namespaces %s*", nsCount, nsPrefix(name))
	}
	if _, err := os.Stat(dir); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			say("removed %s", dir)
		}
	}
	return errors.Join(errs...)
}

// cmdlineHas reports whether pid's command line contains s.
func cmdlineHas(pid int, s string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	return strings.Contains(strings.ReplaceAll(string(b), "\x00", " ")+" ", s)
}

// isAgentBin reports whether pid runs a podnet-agent binary (so a shell
// tailing a lab log is never mistaken for part of the lab).
func isAgentBin(pid int) bool {
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	if err != nil {
		return false
	}
	return filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "podnet-agent"
}

// findProcs lists processes (other than this one) whose command line names
// dir: the lab's agents (--state-dir dir/<node>) and supervisor (--dir dir).
func findProcs(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if !isAgentBin(pid) {
			continue
		}
		if cmdlineHas(pid, dir+"/") || cmdlineHas(pid, "--dir "+dir+" ") {
			out = append(out, pid)
		}
	}
	return out
}
