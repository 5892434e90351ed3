package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kubeProcNames are the executables a Kubernetes lab runs; down stops any
// of them whose command line names the lab directory, and the shims' whole
// process trees (the containers).
var kubeProcNames = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
	"kube-proxy", "kubectl", "containerd", "containerd-shim-runc-v2", "podnet-agent"}

// downKube tears down the Kubernetes part of l: every pod deleted through
// the API while kubelets run (so kubelet's CNI DEL releases its address),
// then the node supervisors (containerd, kubelet, kube-proxy), the
// containers and their shims, the control plane, and the mount points the
// nodes had to create. Namespaces and the lab directory go afterwards, as
// for any lab.
func (l *Lab) downKube(say func(string, ...any)) []error {
	k := l.Kubernetes
	var errs []error
	if alive(k.PIDs["kube-apiserver"]) && len(l.Nodes) > 0 {
		// Nothing recreates what is deleted once the controllers stop.
		for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
			stopPID(k.PIDs[name], syscall.SIGTERM, 10*time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		_, err := l.kubectlOutput(ctx, "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--timeout=60s")
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("delete pods: %w", err))
		}
		// containerd removes a pod's netns file after its CNI DEL.
		deadline := time.Now().Add(30 * time.Second)
		for _, n := range l.Nodes {
			for time.Now().Before(deadline) {
				ents, _ := os.ReadDir(hostDir(n, "/run/netns"))
				if len(ents) == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		say("deleted every pod through the API (kubelet ran CNI DEL)")
	}
	for node, pid := range k.NodePIDs {
		if err := stopPID(pid, syscall.SIGTERM, 30*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("node %s supervisor: %w", node, err))
		}
	}
	// Shims (their -address is a node's containerd socket) and every
	// process under them; then whatever else still names the lab.
	var pids []int
	for _, n := range l.Nodes {
		for _, pid := range procsMatching(func(pid int, exe string) bool {
			return exe == "containerd-shim-runc-v2" && cmdlineHas(pid, n.containerdSock()+" ")
		}) {
			pids = append(pids, descendants(pid)...)
			pids = append(pids, pid)
		}
	}
	pids = append(pids, procsMatching(func(pid int, exe string) bool {
		return slices.Contains(kubeProcNames, exe) && cmdlineHas(pid, l.Dir+"/")
	})...)
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		pids = append(pids, k.PIDs[name])
	}
	for _, pid := range pids {
		if pid > 0 && alive(pid) {
			if err := stopPID(pid, syscall.SIGTERM, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	say("stopped the nodes' containerd, kubelet, kube-proxy, containers and the control plane")
	// Removing a directory that is a mount point in another mount
	// namespace detaches that mount: leave the mount points while another
	// lab's nodes may use them (the last lab down removes them).
	if others, _ := filepath.Glob(filepath.Join(filepath.Dir(l.Dir), "*", "cp")); len(others) > 1 {
		return errs
	}
	for _, n := range l.Nodes {
		b, err := os.ReadFile(filepath.Join(n.StateDir, "created-dirs"))
		if err != nil {
			continue
		}
		for _, p := range strings.Fields(string(b)) {
			if slices.Contains(nodeHostPaths, p) {
				if err := os.Remove(p); err == nil {
					say("removed mount point %s (the lab created it)", p)
				}
			}
		}
	}
	return errs
}

// procsMatching returns the pids (not ours) for which match(pid, exe base
// name) holds.
func procsMatching(match func(pid int, exe string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		if match(pid, filepath.Base(strings.TrimSuffix(exe, " (deleted)"))) {
			out = append(out, pid)
		}
	}
	return out
}

// descendants returns every process below pid, deepest last.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := ppid(p); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		c := children[queue[0]]
		queue = append(queue[1:], c...)
		out = append(out, c...)
	}
	return out
}

func ppid(pid int) (int, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no PPid")
}
