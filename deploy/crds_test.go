package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// deploy/clusternetworkpolicies.yaml is one CRD, the upstream standard
// ClusterNetworkPolicy CRD of the network-policy-api version in go.mod,
// byte for byte after its comment header, annotations intact.
func TestCRDs(t *testing.T) {
	docs, err := documents(CRDs)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(CRDNames) {
		t.Fatalf("%d documents, want %d", len(docs), len(CRDNames))
	}
	var crd struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Group    string `json:"group"`
			Scope    string `json:"scope"`
			Versions []struct {
				Name    string `json:"name"`
				Served  bool   `json:"served"`
				Storage bool   `json:"storage"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(docs[0], &crd); err != nil {
		t.Fatal(err)
	}
	if crd.Kind != "CustomResourceDefinition" || crd.APIVersion != "apiextensions.k8s.io/v1" || crd.Metadata.Name != CRDNames[0] ||
		crd.Spec.Group != "policy.networking.k8s.io" || crd.Spec.Scope != "Cluster" {
		t.Fatalf("not the ClusterNetworkPolicy CRD: %+v", crd)
	}
	if a := crd.Metadata.Annotations; a["policy.networking.k8s.io/bundle-version"] != "v0.3.0" || a["policy.networking.k8s.io/channel"] != "standard" {
		t.Fatalf("annotations %v", a)
	}
	storage := ""
	for _, v := range crd.Spec.Versions {
		if v.Storage && v.Served {
			storage = v.Name
		}
	}
	if storage != "v1beta1" {
		t.Fatalf("storage version %q, want v1beta1 (what the agent reads)", storage)
	}
	header, body, _ := bytes.Cut(CRDs, []byte("\napiVersion:"))
	if n := bytes.Count(header, []byte("\n")) + 1; n != 3 || !bytes.Contains(header, []byte("v0.3.0")) {
		t.Fatalf("header: %d lines, want 3 naming the version:\n%s", n, header)
	}
	// The upstream file, from the module cache, when it is there.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Skipf("network-policy-api module not found (%v): not compared with upstream", err)
	}
	up, err := os.ReadFile(filepath.Join(dir, "config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml"))
	if err != nil {
		t.Skip(err)
	}
	if !bytes.Equal(append([]byte("apiVersion:"), body...), up) {
		t.Fatal("deploy/clusternetworkpolicies.yaml differs from the upstream standard CRD (after the header)")
	}
}
