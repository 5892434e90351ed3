package kubetest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
)

// storage is the etcd behind the apiserver: Debian's etcd binary when the
// machine has one (what a kubeadm-style node runs, and what the issue asks
// the apiserver to be tested with), else podnet's embedded etcd.
type storage interface {
	Endpoints() []string
	Close() error
}

// EtcdBinary is the etcd executable the apiserver is given: $PODNET_KUBE_ETCD,
// else /usr/bin/etcd (apt etcd-server); "" when neither exists.
func EtcdBinary() string {
	if p := os.Getenv("PODNET_KUBE_ETCD"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	return ""
}

func startStorage(dir string) (storage, error) {
	if bin := EtcdBinary(); bin != "" {
		return startEtcdProcess(bin, dir)
	}
	return embedded.Start(dir)
}

// etcdProcess is an etcd server run as a child process on loopback ports.
type etcdProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	client string
	log    *os.File
}

func startEtcdProcess(bin, dir string) (*etcdProcess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // a picked port can be taken before etcd binds it
		cport, err := freePort()
		if err != nil {
			return nil, err
		}
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		client := fmt.Sprintf("http://127.0.0.1:%d", cport)
		peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
		logf, err := os.Create(filepath.Join(dir, "etcd.log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin,
			"--name=kubetest",
			"--data-dir="+filepath.Join(dir, "data"),
			"--listen-client-urls="+client,
			"--advertise-client-urls="+client,
			"--listen-peer-urls="+peer,
			"--initial-advertise-peer-urls="+peer,
			"--initial-cluster=kubetest="+peer,
			"--log-outputs=stderr",
		)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		p := &etcdProcess{cmd: cmd, exited: make(chan struct{}), client: client, log: logf}
		go func() { cmd.Wait(); close(p.exited) }()
		if lastErr = p.waitHealthy(30 * time.Second); lastErr == nil {
			return p, nil
		}
		p.Close()
	}
	return nil, lastErr
}

func (p *etcdProcess) waitHealthy(d time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.log.Name())
			return fmt.Errorf("etcd exited: %s", tail(string(b), 2000))
		default:
		}
		if resp, err := hc.Get(p.client + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcd at %s not healthy after %s", p.client, d)
}

func (p *etcdProcess) Endpoints() []string { return []string{p.client} }

func (p *etcdProcess) Close() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	return p.log.Close()
}
