package nxtest

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// RaceAddDel races n ADDs against n DELs of one container ID (ifname
// eth0, a fresh pod namespace per round), rounds times, with conf (whose
// IPAM is host-local in e's data dir). The verbs may fail (the pod
// interface exists, the address is already held, the interface vanished
// under an ADD): a runtime gets an error and retries. What must never
// happen is a panic, which kills a plugin before its rollback runs; every
// panic is reported with its stack. Afterwards a DEL of each container ID
// and a GC with no valid attachment must leave nothing: no veth in the
// node namespace and no reservation of network.
//
// Each verb runs in a goroutine of its own that ends right after it: a
// panic inside the node namespace leaves that goroutine's thread locked
// there (netns.Do does not switch back on a panic), and the runtime
// discards a locked thread when its goroutine exits.
func (e *Env) RaceAddDel(conf []byte, network string, rounds, n int) {
	e.T.Helper()
	type outcome struct {
		verb  string
		err   error
		panic string
	}
	var outs []*outcome
	var mu sync.Mutex
	var ids, pods []string
	start := time.Now()
	for r := 0; r < rounds; r++ {
		id := fmt.Sprintf("race-%d", r)
		ids = append(ids, id)
		pod := e.Pod()
		pods = append(pods, pod)
		a := e.Args(conf, id, pod, "eth0")
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := 0; i < 2*n; i++ {
			verb := "ADD"
			if i%2 == 1 {
				verb = "DEL"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := &outcome{verb: verb}
				defer func() {
					if p := recover(); p != nil {
						o.panic = fmt.Sprintf("%v\n%s", p, debug.Stack())
					}
					mu.Lock()
					outs = append(outs, o)
					mu.Unlock()
				}()
				<-gate
				if verb == "ADD" {
					_, o.err = e.Add(a)
				} else {
					o.err = e.Del(a)
				}
			}()
		}
		close(gate)
		wg.Wait()
	}
	counts := map[string]int{}
	for _, o := range outs {
		switch {
		case o.panic != "":
			e.T.Errorf("%s panicked (its rollback never ran): %s", o.verb, o.panic)
		case o.err != nil:
			counts[o.verb+" failed"]++
			if counts[o.verb+" failed"] <= 3 {
				e.T.Logf("%s: %v", o.verb, o.err)
			}
		default:
			counts[o.verb+" ok"]++
		}
	}
	e.T.Logf("%d rounds of %d ADDs racing %d DELs in %v: %v", rounds, n, n, time.Since(start).Round(time.Millisecond), counts)

	// The runtime's recovery: DEL each attachment, then GC with none valid.
	for i, id := range ids {
		if err := e.Del(e.Args(conf, id, pods[i], "eth0")); err != nil {
			e.T.Errorf("final DEL %s: %v", id, err)
		}
	}
	s := strings.TrimSpace(string(conf))
	gc := []byte(s[:len(s)-1] + `,"cni.dev/valid-attachments":[]}`)
	if err := e.GC(e.Args(gc, "", "", "")); err != nil {
		e.T.Errorf("GC: %v", err)
	}
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		e.T.Errorf("veths left in the node namespace after DEL and GC: %v", v)
	}
	if r := e.Reservations(network); len(r) != 0 {
		e.T.Errorf("reservations left after DEL and GC: %v", r)
	}
}
