package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/internal/netns"
)

// benchTxnOps stays under etcd's default --max-txn-ops (128).
const benchTxnOps = 100

// putObjects writes objs in transactions of benchTxnOps puts, in order.
func putObjects(ctx context.Context, cli *clientv3.Client, objs []runtime.Object) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for _, obj := range objs {
		key, b, err := encodeObject(obj)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(key, string(b)))
		if len(ops) == benchTxnOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func encodeObject(obj runtime.Object) (string, []byte, error) {
	obj = obj.DeepCopyObject()
	var kind, ns, name string
	var gv schema.GroupVersion
	switch o := obj.(type) {
	case *corev1.Namespace:
		kind, name, gv = etcd.KindNamespace, o.Name, corev1.SchemeGroupVersion
	case *corev1.Pod:
		kind, ns, name, gv = etcd.KindPod, o.Namespace, o.Name, corev1.SchemeGroupVersion
	case *networkingv1.NetworkPolicy:
		kind, ns, name, gv = etcd.KindNetworkPolicy, o.Namespace, o.Name, networkingv1.SchemeGroupVersion
	case *cnp.ClusterNetworkPolicy:
		kind, name, gv = etcd.KindClusterNetworkPolicy, o.Name, cnp.SchemeGroupVersion
	default:
		return "", nil, fmt.Errorf("cannot store a %T", obj)
	}
	key, err := etcd.ObjectKey("", kind, ns, name)
	if err != nil {
		return "", nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(gv.WithKind(kind))
	b, err := json.Marshal(obj)
	return key, b, err
}

// deleteBenchPolicies deletes every policy the bench wrote, in one
// transaction (one revision: the agents see them go at once).
func deleteBenchPolicies(ctx context.Context, cli *clientv3.Client) error {
	p := etcd.ObjectsPrefix("") + "networkpolicies/"
	_, err := cli.Txn(ctx).Then(
		clientv3.OpDelete(p+"pb-", clientv3.WithPrefix()),
		clientv3.OpDelete(p+benchNS+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(etcd.ObjectsPrefix("")+"clusternetworkpolicies/pbc-", clientv3.WithPrefix()),
	).Commit()
	return err
}

// deleteBenchSim deletes the simulated pods and their namespaces (and
// their policies).
func deleteBenchSim(ctx context.Context, cli *clientv3.Client) error {
	p := etcd.ObjectsPrefix("")
	_, err := cli.Txn(ctx).Then(
		clientv3.OpDelete(p+"networkpolicies/pb-", clientv3.WithPrefix()),
		clientv3.OpDelete(p+"clusternetworkpolicies/pbc-", clientv3.WithPrefix()),
		clientv3.OpDelete(p+"pods/pb-", clientv3.WithPrefix()),
		clientv3.OpDelete(p+"namespaces/pb-", clientv3.WithPrefix()),
	).Commit()
	return err
}

func toObjects[T runtime.Object](xs []T) []runtime.Object {
	out := make([]runtime.Object, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// loadAvg1 is the 1-minute load average.
func loadAvg1() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg: %q", b)
	}
	return strconv.ParseFloat(f[0], 64)
}

// procMemKiB reads VmHWM and VmRSS (KiB) of pid.
func procMemKiB(pid int) (hwm, rss int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmHWM":
			hwm = n
		case "VmRSS":
			rss = n
		}
	}
	return hwm, rss, nil
}

// dialIn tries one TCP connection from the namespace at nsPath.
func dialIn(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// waitConnect retries short TCP connections until one succeeds and
// returns when it did. A SYN the policy drops is retransmitted only after
// a second, so each attempt gives up after 3 ms: the resolution.
func waitConnect(ctx context.Context, nsPath, addr string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		c, err := dialIn(nsPath, addr, 3*time.Millisecond)
		if err == nil {
			t := time.Now()
			c.Close()
			return t, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s did not connect within %v: %w", addr, limit, err)
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
	}
}

// listenIn listens on addr inside nsPath; accepted connections echo what
// they read (the RR server) until closed.
func listenIn(nsPath, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netns.Do(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln, nil
}

// requestResponse runs 1-byte ping-pong over one TCP connection for d and
// returns the transactions per second.
func requestResponse(nsPath, addr string, d time.Duration) (float64, error) {
	c, err := dialIn(nsPath, addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	buf := []byte{1}
	n := 0
	start := time.Now()
	end := start.Add(d)
	_ = c.SetDeadline(end.Add(2 * time.Second))
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		if _, err := c.Read(buf); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// connectRate counts new TCP connections per second (connect, one byte
// each way, close) to addr from nsPath for d: every one is a first packet
// that walks the isolated pods' profile chains, where the established
// traffic of requestResponse never goes.
func connectRate(nsPath, addr string, d time.Duration) (float64, error) {
	n := 0
	start := time.Now()
	err := netns.Do(nsPath, func() error {
		buf := []byte{1}
		for end := start.Add(d); time.Now().Before(end); n++ {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Write(buf)
			if err == nil {
				_, err = c.Read(buf)
			}
			// Close with RST, not FIN: no TIME_WAIT piling up on the
			// client's ports.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	return float64(n) / time.Since(start).Seconds(), err
}
