package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/datastore/kubernetes"
)

// OpenStore connects the datastore that c selects.
func OpenStore(ctx context.Context, c DatastoreConfig) (datastore.Store, error) {
	switch c.Type {
	case "", "etcd":
	case "kubernetes":
		return kubernetes.New(ctx, kubernetes.Options{Kubeconfig: c.Kubeconfig, Log: c.Log})
	default:
		return nil, fmt.Errorf("datastore %q: must be etcd or kubernetes", c.Type)
	}
	var tc *tls.Config
	if c.CertFile != "" || c.CAFile != "" {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("datastore: client cert %s / key %s: %w", c.CertFile, c.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("datastore: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("datastore: CA file %s holds no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
	}
	return etcd.New(ctx, etcd.Options{Endpoints: c.Endpoints, TLS: tc, Prefix: c.Prefix, TTL: c.LeaseTTL})
}

// ObjectsOf is the policy ObjectSource sharing store's connection: the
// etcd store's <prefix>/objects/ keys, or the Kubernetes store's informers.
func ObjectsOf(store datastore.Store, log *slog.Logger) (datastore.ObjectSource, error) {
	switch s := store.(type) {
	case *etcd.Store:
		return s.ObjectSource(log), nil
	case *kubernetes.Store:
		return s.ObjectSource(), nil
	default:
		return nil, fmt.Errorf("network policy: datastore %T has no policy objects", store)
	}
}
