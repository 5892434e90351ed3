// Package metrics is the agent's observability endpoint: one HTTP listener
// serving /metrics (Prometheus, through prometheus/client_golang, on a
// registry of its own so several agents can live in one process),
// /healthz (the process answers) and /readyz (the agent's last sync
// succeeded). It owns the metric definitions and the listener; it reads
// nothing from the kernel or the datastore itself: the agent reports into
// it, and collectors it is given are called at scrape time.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	Syncs        *prometheus.CounterVec   // loop: overlay | policy
	SyncErrors   *prometheus.CounterVec   // loop
	SyncDuration *prometheus.HistogramVec // loop
	Nodes        prometheus.Gauge
	Routes       prometheus.Gauge
	Objects      *prometheus.GaugeVec // kind: namespaces | pods | networkpolicies
	IsolatedPods *prometheus.GaugeVec // direction: ingress | egress
	SetElements  prometheus.Gauge

	ready atomic.Bool
}

// New makes the metrics on a fresh registry (with the Go and process
// collectors).
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "podnet", Name: "sync_total", Help: "Reconcile passes, by loop (overlay, policy).",
		}, []string{"loop"}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "podnet", Name: "sync_errors_total", Help: "Reconcile passes that did not reach the desired state, by loop.",
		}, []string{"loop"}),
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "podnet", Name: "sync_duration_seconds", Help: "Time of one reconcile pass (compute and kernel apply), by loop.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"loop"}),
		Nodes:  prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podnet", Name: "nodes", Help: "Node records in the datastore."}),
		Routes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podnet", Name: "routes", Help: "Routes to other nodes' pod subnets the agent programs."}),
		Objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "podnet", Subsystem: "policy", Name: "objects", Help: "Objects network policy reads, by kind.",
		}, []string{"kind"}),
		IsolatedPods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "podnet", Subsystem: "policy", Name: "isolated_pods", Help: "Pods on this node that policies isolate, by direction.",
		}, []string{"direction"}),
		SetElements: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "podnet", Subsystem: "policy", Name: "set_elements", Help: "Elements in this node's policy sets (the compiled rules).",
		}),
	}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Syncs, m.SyncErrors, m.SyncDuration, m.Nodes, m.Routes, m.Objects, m.IsolatedPods, m.SetElements)
	return m
}

// ObserveSync records one pass of loop.
func (m *Metrics) ObserveSync(loop string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.Syncs.WithLabelValues(loop).Inc()
	m.SyncDuration.WithLabelValues(loop).Observe(took.Seconds())
	if err != nil {
		m.SyncErrors.WithLabelValues(loop).Inc()
	}
}

// SetReady sets what /readyz answers.
func (m *Metrics) SetReady(ok bool) {
	if m != nil {
		m.ready.Store(ok)
	}
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready: the agent has not completed a sync", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr until ctx is done: host:port, or unix:PATH for a
// unix socket (made afresh, removed at the end: scraped locally, e.g. by
// the lab, without a TCP port).
func (m *Metrics) Serve(ctx context.Context, addr string) error {
	network, where := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, where = "unix", path
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("metrics listener %s: %w", addr, err)
		}
		defer os.Remove(path)
	}
	ln, err := net.Listen(network, where)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Denied is a count of packets policy dropped, for one policy and
// direction.
type Denied struct {
	Policy    string // "namespace/name"
	Direction string // ingress | egress
	Packets   uint64
}

// deniedCollector reports podnet_policy_denied_packets_total at scrape
// time from read.
type deniedCollector struct {
	desc *prometheus.Desc
	read func() ([]Denied, error)
}

func (c deniedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c deniedCollector) Collect(ch chan<- prometheus.Metric) {
	ds, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, d := range ds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(d.Packets), d.Policy, d.Direction)
	}
}

// RegisterDenied makes /metrics report the denied packets read returns
// (monotonic per policy and direction; read is called at every scrape).
func (m *Metrics) RegisterDenied(read func() ([]Denied, error)) error {
	if m == nil {
		return nil
	}
	return m.Registry.Register(deniedCollector{
		desc: prometheus.NewDesc("podnet_policy_denied_packets_total",
			"Packets dropped by network policy on this node, by policy and direction. A packet dropped for a pod that several policies isolate counts once for each of them.",
			[]string{"policy", "direction"}, nil),
		read: read,
	})
}

// Fetch GETs path (e.g. "/metrics") from an agent serving on addr, in
// Serve's forms (host:port or unix:PATH), and returns the body.
func Fetch(ctx context.Context, addr, path string) (string, error) {
	tr := &http.Transport{}
	url := "http://" + addr + path
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		}
		url = "http://agent" + path
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s from %s: %s", path, addr, resp.Status)
	}
	return string(b), nil
}
