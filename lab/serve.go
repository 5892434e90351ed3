package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
)

// Serve is `podnet-agent lab serve`: it hosts the lab's embedded etcd (data
// in <dir>/etcd) until ctx ends, announcing its endpoints in
// <dir>/etcd.json. clientURL and peerURL, when set, are those of a
// previous run (a restart); else etcd picks free loopback ports.
func Serve(ctx context.Context, dir, clientURL, peerURL string) error {
	e, err := embedded.StartAt(filepath.Join(dir, "etcd"), clientURL, peerURL)
	if err != nil {
		return err
	}
	defer e.Close()
	b, _ := json.Marshal(Etcd{PID: os.Getpid(), Endpoints: e.Endpoints(), PeerURL: e.PeerURL()})
	tmp := filepath.Join(dir, ".etcd.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "etcd.json")); err != nil {
		return err
	}
	fmt.Printf("etcd serving at %v\n", e.Endpoints())
	<-ctx.Done()
	fmt.Println("stopping etcd")
	return nil
}
