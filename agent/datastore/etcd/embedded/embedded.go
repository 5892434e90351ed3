// Package embedded runs a single-member etcd inside the process on
// 127.0.0.1 with a throw-away data directory: for tests of the etcd
// datastore and the agent, and later for the lab. It is a separate package
// so the agent binary does not link the etcd server.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd.
type Etcd struct {
	e   *embed.Etcd
	dir string
	own bool
}

// Start runs etcd with its data in dir (a fresh temporary directory when
// dir is ""), listening on random loopback ports.
func Start(dir string) (*Etcd, error) {
	own := false
	if dir == "" {
		d, err := os.MkdirTemp("", "podnet-etcd-")
		if err != nil {
			return nil, err
		}
		dir, own = d, true
	}
	var lastErr error
	for range 5 { // a picked port can be taken before etcd binds it
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Name = "podnet"
		cfg.Dir = dir
		cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
		pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.LogLevel = "error"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return &Etcd{e: e, dir: dir, own: own}, nil
		case err := <-e.Err():
			e.Close()
			lastErr = err
		case <-time.After(30 * time.Second):
			e.Close()
			lastErr = errors.New("embedded etcd not ready after 30s")
		}
	}
	if own {
		os.RemoveAll(dir)
	}
	return nil, fmt.Errorf("start embedded etcd: %w", lastErr)
}

// Endpoints are the client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, u := range e.e.Config().AdvertiseClientUrls {
		out = append(out, u.String())
	}
	return out
}

// Close stops etcd and removes a data directory Start created.
func (e *Etcd) Close() error {
	e.e.Close()
	if e.own {
		return os.RemoveAll(e.dir)
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
