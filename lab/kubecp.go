package lab

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podnet/podnet/deploy"
	"github.com/podnet/podnet/internal/kubepki"
)

func (k *Kube) cpDir(l *Lab) string { return filepath.Join(l.Dir, "cp") }

// startControlPlane writes the PKI and admin kubeconfig, starts etcd,
// kube-apiserver (waiting for /readyz), kube-controller-manager (which
// allocates node pod CIDRs from the cluster CIDR) and kube-scheduler in the
// control plane's namespace.
func (l *Lab) startControlPlane(ctx context.Context) error {
	k := l.Kubernetes
	dir := k.cpDir(l)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cpIP := net.IP(k.ControlPlane.IP.AsSlice())
	pki, err := kubepki.New("podnet-lab-"+l.Name, []net.IP{cpIP, net.IPv4(10, 96, 0, 1), net.IPv4(127, 0, 0, 1)}, nil, 365*24*time.Hour)
	if err != nil {
		return err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	token := hex.EncodeToString(tok)
	f := func(n string) string { return filepath.Join(dir, n) }
	for name, b := range map[string][]byte{
		"ca.crt": pki.CA, "ca.key": pki.CAKey, "apiserver.crt": pki.Cert, "apiserver.key": pki.Key,
		"sa.key": pki.SAKey, "sa.pub": pki.SAPublic,
		"tokens.csv": fmt.Appendf(nil, "%s,admin,admin,\"system:masters\"\n", token),
	} {
		if err := os.WriteFile(f(name), b, 0o600); err != nil {
			return err
		}
	}
	server := fmt.Sprintf("https://%s", net.JoinHostPort(k.ControlPlane.IP.String(), fmt.Sprint(kubeAPIPort)))
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: pki.CA}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "admin"}
	kc.CurrentContext = "lab"
	k.Kubeconfig = f("admin.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, k.Kubeconfig); err != nil {
		return err
	}
	if err := l.Save(); err != nil {
		return err
	}

	cidrs := l.ClusterCIDR.String()
	if l.ClusterCIDR6.IsValid() {
		cidrs += "," + l.ClusterCIDR6.String()
	}
	procs := []struct {
		name string
		bin  string
		args []string
	}{
		{"etcd", etcdBin, []string{"--name", "lab", "--data-dir", f("etcd"),
			"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
			"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster", "lab=http://127.0.0.1:2380", "--quota-backend-bytes", "2147483648"}},
		{"kube-apiserver", k.bin("kube-apiserver"), []string{
			"--etcd-servers=http://127.0.0.1:2379",
			"--bind-address=0.0.0.0", "--advertise-address=" + k.ControlPlane.IP.String(),
			fmt.Sprintf("--secure-port=%d", kubeAPIPort), "--cert-dir=" + f("certs"),
			"--tls-cert-file=" + f("apiserver.crt"), "--tls-private-key-file=" + f("apiserver.key"),
			"--client-ca-file=" + f("ca.crt"), "--token-auth-file=" + f("tokens.csv"),
			"--authorization-mode=Node,RBAC", "--allow-privileged=true",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + f("sa.pub"), "--service-account-signing-key-file=" + f("sa.key"),
			"--service-cluster-ip-range=" + kubeServiceCIDR,
			// exec and logs: kubelets are reached at their InternalIP
			// (there is no DNS for node names).
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--enable-priority-and-fairness=false", "--profiling=false", "--v=1",
		}},
	}
	for _, p := range procs {
		if err := l.startCP(p.name, p.bin, p.args); err != nil {
			return err
		}
		if p.name == "kube-apiserver" {
			if err := l.waitAPIServer(ctx, 90*time.Second); err != nil {
				return err
			}
		}
	}
	kcm := []string{"--kubeconfig=" + k.Kubeconfig, "--allocate-node-cidrs=true", "--cluster-cidr=" + cidrs,
		"--service-cluster-ip-range=" + kubeServiceCIDR, "--service-account-private-key-file=" + f("sa.key"),
		"--root-ca-file=" + f("ca.crt"), "--use-service-account-credentials=false",
		"--controllers=*,-cloud-node-lifecycle", "--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1"}
	if l.ClusterCIDR6.IsValid() {
		kcm = append(kcm, "--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64")
	} else {
		kcm = append(kcm, "--node-cidr-mask-size=24")
	}
	if err := l.startCP("kube-controller-manager", k.bin("kube-controller-manager"), kcm); err != nil {
		return err
	}
	return l.startCP("kube-scheduler", k.bin("kube-scheduler"), []string{"--kubeconfig=" + k.Kubeconfig,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1"})
}

func (l *Lab) startCP(name, bin string, args []string) error {
	k := l.Kubernetes
	pid, err := spawnIn(NetnsPath(k.ControlPlane.Netns), false, bin, args, filepath.Join(k.cpDir(l), name+".log"))
	if err != nil {
		return fmt.Errorf("control plane: start %s: %w", name, err)
	}
	k.PIDs[name] = pid
	return l.Save()
}

func (l *Lab) waitAPIServer(ctx context.Context, d time.Duration) error {
	cs, err := l.KubeClient()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			return nil
		}
		pid := l.Kubernetes.PIDs["kube-apiserver"]
		if !alive(pid) || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(l.Kubernetes.cpDir(l), "kube-apiserver.log"))
			return fmt.Errorf("kube-apiserver not ready (%v): %s", err, tail(log))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// imageTags returns the references a docker-archive tarball's manifest.json
// names (what `ctr images import` creates).
func imageTags(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s: no manifest.json (not a docker-archive tarball)", path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return nil, fmt.Errorf("%s: manifest.json: %w", path, err)
		}
		var tags []string
		for _, e := range m {
			tags = append(tags, e.RepoTags...)
		}
		return tags, nil
	}
}

// writeManifest writes the lab's copy of deploy/podnet.yaml: the lab's
// cluster CIDRs and backend in its ConfigMap, and the image the podnet
// tarball is tagged with (what every node imports), which applyPodnet
// applies.
func (l *Lab) writeManifest() error {
	k := l.Kubernetes
	tags, err := imageTags(k.PodnetImage)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		return fmt.Errorf("podnet image %s has no tag: rebuild it with `make image`", k.PodnetImage)
	}
	cidrs := l.ClusterCIDR.String()
	if l.ClusterCIDR6.IsValid() {
		cidrs += "," + l.ClusterCIDR6.String()
	}
	b, err := deploy.Render(deploy.Options{Image: tags[0], Config: map[string]string{"cluster-cidr": cidrs, "backend": l.Backend}})
	if err != nil {
		return err
	}
	k.Manifest = filepath.Join(l.Dir, "podnet.yaml")
	if err := os.WriteFile(k.Manifest, b, 0o644); err != nil {
		return err
	}
	return l.Save()
}

// applyPodnet applies the ClusterNetworkPolicy CRD (deploy.CRDs, written
// to <lab dir>/crds.yaml; server-side, as docs/kubernetes.md says, since
// it is large) and then the lab's manifest with kubectl.
func (l *Lab) applyPodnet(ctx context.Context) error {
	crds := filepath.Join(l.Dir, "crds.yaml")
	if err := os.WriteFile(crds, deploy.CRDs, 0o644); err != nil {
		return err
	}
	if _, err := l.kubectlOutput(ctx, "apply", "--server-side", "-f", crds); err != nil {
		return err
	}
	_, err := l.kubectlOutput(ctx, "apply", "-f", l.Kubernetes.Manifest)
	return err
}
