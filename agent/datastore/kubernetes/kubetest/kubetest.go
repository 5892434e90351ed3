// Package kubetest runs a real kube-apiserver for tests: Debian's etcd (or,
// without it, podnet's embedded etcd) as its storage, certificates and a service-account key generated
// here, RBAC authorization and two static bearer tokens (an admin in
// system:masters, and an unprivileged "podnet-agent" user that tests bind
// to AgentClusterRole, so the documented permissions are what is tested).
//
// The binary is built by tools/kubernetes/build.sh; Binary finds it.
// Only tests import this package.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/internal/kubepki"
)

// Version is the kube-apiserver tools/kubernetes builds.
const Version = "v1.34.4"

// Users with a static token.
const (
	AdminUser = "admin"
	AgentUser = "podnet-agent"
)

// Binary returns the kube-apiserver to run: $PODNET_KUBE_APISERVER, else
// the binary build.sh caches ($PODNET_TEST_CACHE or /var/cache/podnet-test
// + /kube-apiserver-<Version>).
func Binary() (string, error) {
	if p := os.Getenv("PODNET_KUBE_APISERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PODNET_KUBE_APISERVER: %w", err)
		}
		return p, nil
	}
	dir := os.Getenv("PODNET_TEST_CACHE")
	if dir == "" {
		dir = "/var/cache/podnet-test"
	}
	p := filepath.Join(dir, "kube-apiserver-"+Version)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no kube-apiserver at %s: build it with tools/kubernetes/build.sh (needs the Go module proxy, ~4 min) or set PODNET_KUBE_APISERVER", p)
	}
	return p, nil
}

// Server is a running kube-apiserver with its etcd.
type Server struct {
	URL    string
	CAPEM  []byte
	dir    string
	etcd   storage
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	logMu  *sync.Mutex
	tokens map[string]string // user -> token
}

// Start runs a kube-apiserver for t, skipping t when there is no binary
// (failing instead when PODNET_REQUIRE_KUBE_APISERVER=1, as CI sets).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("PODNET_REQUIRE_KUBE_APISERVER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	s, err := New(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Logf("kube-apiserver %s at %s, storage %s", Version, s.URL, storageName())
	return s
}

// storageName says which etcd backs the apiserver, for test logs.
func storageName() string {
	if b := EtcdBinary(); b != "" {
		return b
	}
	return "embedded etcd"
}

var shared struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// Shared is Start for a whole test binary: the first call starts one
// apiserver (with GrantAgent done), later calls reuse it. Tests sharing it
// use distinct node names. TestMain calls CloseShared after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("PODNET_REQUIRE_KUBE_APISERVER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "podnet-kubetest-"); shared.err != nil {
			return
		}
		if shared.srv, shared.err = New(bin, shared.dir); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared.err = shared.srv.GrantAgent(ctx)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	t.Logf("kube-apiserver %s at %s, storage %s", Version, shared.srv.URL, storageName())
	return shared.srv
}

// CloseShared stops the server Shared started, if any.
func CloseShared() {
	if shared.srv != nil {
		shared.srv.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// New starts etcd and the apiserver with state under dir and waits until
// /readyz answers.
func New(bin, dir string) (*Server, error) {
	e, err := startStorage(filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, etcd: e, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, tokens: map[string]string{}}
	if err := s.start(bin); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (s *Server) start(bin string) error {
	pki, err := kubepki.New("podnet-test-ca", []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)}, nil, 24*time.Hour)
	if err != nil {
		return err
	}
	s.CAPEM = pki.CA
	files := map[string][]byte{
		"serving.crt": pki.Cert,
		"serving.key": pki.Key,
		"sa.key":      pki.SAKey,
		"sa.pub":      pki.SAPublic,
	}
	var tokens strings.Builder
	for _, u := range []struct{ user, group string }{{AdminUser, "system:masters"}, {AgentUser, "podnet:agents"}} {
		tok := randToken()
		s.tokens[u.user] = tok
		fmt.Fprintf(&tokens, "%s,%s,%s,\"%s\"\n", tok, u.user, u.user, u.group)
	}
	files["tokens.csv"] = []byte(tokens.String())
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	var lastErr error
	for range 3 { // a picked port can be taken before the apiserver binds it
		port, err := freePort()
		if err != nil {
			return err
		}
		s.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
		f := func(n string) string { return filepath.Join(s.dir, n) }
		args := []string{
			"--etcd-servers=" + strings.Join(s.etcd.Endpoints(), ","),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + f("certs"),
			"--tls-cert-file=" + f("serving.crt"),
			"--tls-private-key-file=" + f("serving.key"),
			"--token-auth-file=" + f("tokens.csv"),
			"--authorization-mode=RBAC",
			"--allow-privileged=true", // as kubeadm: deploy/podnet.yaml's agent is privileged
			"--anonymous-auth=false",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + f("sa.pub"),
			"--service-account-signing-key-file=" + f("sa.key"),
			"--service-cluster-ip-range=10.96.0.0/16",
			"--endpoint-reconciler-type=none",
			"--enable-priority-and-fairness=false",
			"--logging-format=text",
			"--v=1",
		}
		s.logMu.Lock()
		s.log.Reset()
		s.logMu.Unlock()
		cmd := exec.Command(bin, args...)
		cmd.Stdout = lockedWriter{s.logMu, s.log}
		cmd.Stderr = cmd.Stdout
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", bin, err)
		}
		s.cmd, s.exited = cmd, make(chan struct{})
		go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(cmd, s.exited)
		if lastErr = s.waitReady(90 * time.Second); lastErr == nil {
			return nil
		}
		s.stop()
		if !strings.Contains(s.Log(), "address already in use") {
			break
		}
	}
	return lastErr
}

// Log returns what the apiserver printed so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (s *Server) waitReady(d time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("kube-apiserver exited: %s", tail(s.Log(), 3000))
		default:
		}
		req, _ := http.NewRequest("GET", s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.tokens[AdminUser])
		resp, err := hc.Do(req)
		if err == nil {
			b := make([]byte, 4096)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s (last: %s); log: %s", d, last, tail(s.Log(), 3000))
}

func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Close stops the apiserver and etcd.
func (s *Server) Close() {
	s.stop()
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Config is a client config for user (AdminUser or AgentUser).
func (s *Server) Config(user string) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     s.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CAPEM},
		QPS:             100,
		Burst:           200,
	}
}

// Client is a clientset for user.
func (s *Server) Client(user string) (*k8s.Clientset, error) {
	return k8s.NewForConfig(s.Config(user))
}

// Kubeconfig writes a kubeconfig file for user and returns its path.
func (s *Server) Kubeconfig(user string) (string, error) {
	c := clientcmdapi.NewConfig()
	c.Clusters["test"] = &clientcmdapi.Cluster{Server: s.URL, CertificateAuthorityData: s.CAPEM}
	c.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: s.tokens[user]}
	c.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	c.CurrentContext = "test"
	p := filepath.Join(s.dir, "kubeconfig-"+user)
	return p, clientcmd.WriteToFile(*c, p)
}

// AgentClusterRole is what the podnet agent needs with the kubernetes
// datastore: informers (list, watch) and patches, no get; deploy/podnet.yaml
// grants exactly this (its test compares).
func AgentClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet-agent"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"policy.networking.k8s.io"}, Resources: []string{"clusternetworkpolicies"}, Verbs: []string{"list", "watch"}},
		},
	}
}

// GrantAgent creates AgentClusterRole and binds it to AgentUser.
func (s *Server) GrantAgent(ctx context.Context) error {
	cli, err := s.Client(AdminUser)
	if err != nil {
		return err
	}
	if _, err := cli.RbacV1().ClusterRoles().Create(ctx, AgentClusterRole(), metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = cli.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "podnet-agent"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: AgentUser}},
	}, metav1.CreateOptions{})
	return err
}

// InstallCRDs creates the CustomResourceDefinitions of a YAML stream (as
// `kubectl apply` would, through the REST API: no apiextensions client
// here) and waits until each is established.
func (s *Server) InstallCRDs(ctx context.Context, stream []byte) error {
	cli, err := s.Client(AdminUser)
	if err != nil {
		return err
	}
	rc := cli.CoreV1().RESTClient()
	const path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return err
		}
		var meta struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			return err
		}
		if meta.Kind == "" {
			continue // comments only
		}
		if meta.Kind != "CustomResourceDefinition" {
			return fmt.Errorf("InstallCRDs: a %s in the stream", meta.Kind)
		}
		if err := rc.Post().AbsPath(path).SetHeader("Content-Type", "application/json").Body(js).Do(ctx).Error(); err != nil {
			return fmt.Errorf("create CRD %s: %w", meta.Metadata.Name, err)
		}
		for {
			var crd struct {
				Status struct {
					Conditions []struct{ Type, Status string } `json:"conditions"`
				} `json:"status"`
			}
			b, err := rc.Get().AbsPath(path, meta.Metadata.Name).Do(ctx).Raw()
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &crd); err != nil {
				return err
			}
			established := false
			for _, c := range crd.Status.Conditions {
				established = established || (c.Type == "Established" && c.Status == "True")
			}
			if established {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not established: %w", meta.Metadata.Name, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func randToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
