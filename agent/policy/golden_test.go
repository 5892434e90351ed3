package policy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// loadModel reads testdata/<name>.yaml: Namespace, Pod and NetworkPolicy
// objects separated by "---" lines.
func loadModel(t testing.TB, name string) Model {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseObjects(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func parseObjects(data []byte) (Model, error) {
	var (
		nss  []*corev1.Namespace
		pods []*corev1.Pod
		pols []*networkingv1.NetworkPolicy
		cnps []*cnp.ClusterNetworkPolicy
	)
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return Model{}, fmt.Errorf("document %d: %v", i, err)
		}
		var obj any
		switch tm.Kind {
		case "Namespace":
			ns := &corev1.Namespace{}
			nss, obj = append(nss, ns), ns
		case "Pod":
			p := &corev1.Pod{}
			pods, obj = append(pods, p), p
		case "NetworkPolicy":
			np := &networkingv1.NetworkPolicy{}
			pols, obj = append(pols, np), np
		case "ClusterNetworkPolicy":
			p := &cnp.ClusterNetworkPolicy{}
			cnps, obj = append(cnps, p), p
		default:
			return Model{}, fmt.Errorf("document %d: unknown kind %q", i, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return Model{}, fmt.Errorf("document %d (%s): %v", i, tm.Kind, err)
		}
	}
	m := ModelFromObjects(nss, pods, pols)
	m.ClusterPolicies = cnps
	return m, nil
}

// goldenCases are the testdata cases and the node each is compiled for.
var goldenCases = []struct{ name, node string }{
	{"selectors", "n1"},
	{"defaults", "n1"},
	{"peers", "n1"},
	{"ipblock", "n1"},
	{"ports", "n1"},
	{"ports", "n2"},
	{"problems", "n1"},
	{"dualstack", "n1"},
	{"tiers", "n1"},
	{"tiers", "n2"},
}

func TestGolden(t *testing.T) {
	for _, gc := range goldenCases {
		t.Run(gc.name+"@"+gc.node, func(t *testing.T) {
			m := loadModel(t, gc.name)
			rs := Compile(m, gc.node)
			checkInvariants(t, rs)
			got := Render(rs)
			path := filepath.Join("testdata", gc.name+"@"+gc.node+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(want, []byte(got)) {
				t.Errorf("%s differs from Render (run with -update to rewrite it):\n%s", path, got)
			}
		})
	}
}
