package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/podnet/podnet/internal/cniclient"
)

// parRound is one parallel wave of one implementation.
type parRound struct {
	add, del, floor time.Duration
}

// parallel makes N pod namespaces (untimed), ADDs the chain to all of them
// at once, DELs all at once, then times N loopback ADDs at once (the
// parallel floor) and removes the namespaces. Every ADD, DEL and loopback
// ADD is one goroutine calling libcni, as N pods started together by a
// runtime would be.
func (r *run) parallel(ctx context.Context, im *impl, round int) error {
	n := r.o.Parallel
	pid := os.Getpid()
	pods := make([]string, n)
	first := len(r.nsNames)
	defer func() {
		for len(r.nsNames) > first {
			_ = r.dropPod() // the deferred cleanup of Run retries what fails here
		}
	}()
	for k := range pods {
		p, err := r.newPod(fmt.Sprintf("pnb-par-%d-%d-%d", im.num, pid, k))
		if err != nil {
			return err
		}
		pods[k] = p
	}
	atts := make([]cniclient.Attachment, n)
	for k := range atts {
		atts[k] = r.attachment(fmt.Sprintf("pnbench-par-%d-%d", round, k), pods[k], parHostPortBase+k)
	}

	var pr parRound
	var err error
	if pr.add, err = wave(n, func(k int) error {
		_, err := im.cl.Add(ctx, im.chain, atts[k])
		return err
	}); err != nil {
		// Best effort: leave nothing cached or allocated behind.
		_, _ = wave(n, func(k int) error { return im.cl.Del(ctx, im.chain, atts[k]) })
		return fmt.Errorf("parallel ADD: %w", err)
	}
	if pr.del, err = wave(n, func(k int) error { return im.cl.Del(ctx, im.chain, atts[k]) }); err != nil {
		return fmt.Errorf("parallel DEL: %w", err)
	}
	lo := make([]cniclient.Attachment, n)
	for k := range lo {
		lo[k] = cniclient.Attachment{ContainerID: atts[k].ContainerID, NetNS: pods[k], IfName: "lo"}
	}
	if pr.floor, err = wave(n, func(k int) error {
		_, err := im.cl.Add(ctx, im.lo, lo[k])
		return err
	}); err != nil {
		return fmt.Errorf("parallel loopback ADD: %w", err)
	}
	if _, err := wave(n, func(k int) error { return im.cl.Del(ctx, im.lo, lo[k]) }); err != nil {
		return fmt.Errorf("parallel loopback DEL: %w", err)
	}
	im.par = append(im.par, pr)
	return nil
}

// wave runs fn(0..n-1) in n goroutines released together and returns the
// wall time from the release to the last return, and every error.
func wave(n int, fn func(k int) error) (time.Duration, error) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	ready.Add(n)
	done.Add(n)
	for k := 0; k < n; k++ {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			if err := fn(k); err != nil {
				errs[k] = fmt.Errorf("pod %d: %w", k, err)
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return time.Since(t0), errors.Join(errs...)
}

func (im *impl) parStats(pods int) ParStats {
	var adds, dels, floors []time.Duration
	for _, p := range im.par {
		adds = append(adds, p.add)
		dels = append(dels, p.del)
		floors = append(floors, p.floor)
	}
	return ParStats{Name: im.name, Pods: pods, Rounds: len(im.par), Add: median(adds), Del: median(dels), Floor: median(floors)}
}
