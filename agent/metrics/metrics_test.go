package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEndpoints(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, _ := get("/healthz"); c != 200 {
		t.Errorf("/healthz %d", c)
	}
	if c, _ := get("/readyz"); c != 503 {
		t.Errorf("/readyz before a sync: %d, want 503", c)
	}
	m.SetReady(true)
	if c, _ := get("/readyz"); c != 200 {
		t.Errorf("/readyz after: %d", c)
	}
	m.ObserveSync("policy", 3*time.Millisecond, nil)
	m.ObserveSync("policy", 5*time.Millisecond, errors.New("x"))
	m.Objects.WithLabelValues("pods").Set(7)
	_, body := get("/metrics")
	for _, want := range []string{`podnet_sync_total{loop="policy"} 2`, `podnet_sync_errors_total{loop="policy"} 1`,
		`podnet_sync_duration_seconds_count{loop="policy"} 2`, `podnet_policy_objects{kind="pods"} 7`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestServeUnix: unix:PATH serves on a unix socket, Fetch reads it, and
// the socket goes when the server stops.
func TestServeUnix(t *testing.T) {
	m := New()
	addr := "unix:" + t.TempDir() + "/metrics.sock"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, addr) }()
	var body string
	var err error
	for range 100 {
		if body, err = Fetch(ctx, addr, "/metrics"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("fetch: %v\n%s", err, body)
	}
	if _, err := Fetch(ctx, addr, "/readyz"); err == nil {
		t.Error("/readyz before a sync: no error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimPrefix(addr, "unix:")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}
