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
	return StartAt(dir, "", "")
}

// StartAt is Start on the given client and peer URLs (both
// http://127.0.0.1:PORT), or on random loopback ports when they are "".
// Restarting on the URLs of a previous run over the same dir brings the
// same member back where its clients (which dial a fixed endpoint) look.
func StartAt(dir, clientURL, peerURL string) (*Etcd, error) {
	own := false
	if dir == "" {
		d, err := os.MkdirTemp("", "podnet-etcd-")
		if err != nil {
			return nil, err
		}
		dir, own = d, true
	}
	fixed := clientURL != "" && peerURL != ""
	var lastErr error
	for range 5 { // a picked port can be taken before etcd binds it
		cs, ps := clientURL, peerURL
		if !fixed {
			ports, err := freePorts(2)
			if err != nil {
				return nil, err
			}
			cs, ps = fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		}
		cu, err := url.Parse(cs)
		if err != nil {
			return nil, fmt.Errorf("etcd client URL %q: %w", cs, err)
		}
		pu, err := url.Parse(ps)
		if err != nil {
			return nil, fmt.Errorf("etcd peer URL %q: %w", ps, err)
		}
		cfg := embed.NewConfig()
		cfg.Name = "podnet"
		cfg.Dir = dir
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.LogLevel = "error"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			if fixed {
				break
			}
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
		if fixed {
			break
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

// PeerURL is the member's peer URL (for StartAt on a restart).
func (e *Etcd) PeerURL() string {
	return e.e.Config().AdvertisePeerUrls[0].String()
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
