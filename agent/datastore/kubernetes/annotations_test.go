package kubernetes

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/agent/datastore"
)

func testNode(name string, cidrs []string, ann map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	n.Spec.PodCIDRs = cidrs
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	return n
}

func TestAnnotationsRoundTrip(t *testing.T) {
	for _, info := range []datastore.NodeInfo{
		{
			Name:        "a",
			UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00:64::1")},
			VtepMAC:     "0e:11:22:33:44:55",
			Subnets:     []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:0:1::/64")},
			Backend:     "vxlan",
		},
		{ // host-gw: no VTEP MAC, no annotation for it
			Name:        "b",
			UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")},
			Subnets:     []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")},
			Backend:     "host-gw",
		},
	} {
		ann := Annotations(info)
		if _, has := ann[AnnotationVtepMAC]; has != (info.VtepMAC != "") {
			t.Fatalf("%s: vtep-mac annotation present=%v for MAC %q", info.Name, has, info.VtepMAC)
		}
		var cidrs []string
		for _, s := range info.Subnets {
			cidrs = append(cidrs, s.String())
		}
		got, err := NodeInfoFrom(testNode(info.Name, cidrs, ann))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, info) || !nodeInfoEqual(got, info) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, info)
		}
	}
	ann := Annotations(datastore.NodeInfo{UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00::1")}, Backend: "auto"})
	want := map[string]string{AnnotationUnderlayIPs: "100.64.0.1,fd00::1", AnnotationBackend: "auto"}
	if !reflect.DeepEqual(ann, want) {
		t.Fatalf("annotations %v, want %v", ann, want)
	}
}

func TestNodeInfoFromNotPublished(t *testing.T) {
	ok := map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationBackend: "vxlan"}
	for name, n := range map[string]*corev1.Node{
		"no podCIDRs":      testNode("x", nil, ok),
		"no annotations":   testNode("x", []string{"10.244.0.0/24"}, nil),
		"foreign ann only": testNode("x", []string{"10.244.0.0/24"}, map[string]string{"flannel.alpha.coreos.com/public-ip": "1.2.3.4"}),
	} {
		if _, err := NodeInfoFrom(n); !errors.Is(err, errNotPublished) {
			t.Errorf("%s: err %v, want not published", name, err)
		}
	}
	// Legacy single spec.podCIDR still counts.
	n := testNode("x", nil, ok)
	n.Spec.PodCIDR = "10.244.7.0/24"
	if info, err := NodeInfoFrom(n); err != nil || info.Subnets[0] != netip.MustParsePrefix("10.244.7.0/24") {
		t.Fatalf("legacy podCIDR: %+v %v", info, err)
	}
}

func TestNodeInfoFromMalformed(t *testing.T) {
	for _, c := range []struct {
		ann   map[string]string
		cidrs []string
		want  string
	}{
		{map[string]string{AnnotationUnderlayIPs: "100.64.0.1,nope"}, []string{"10.244.0.0/24"}, `"nope" is not an IP address`},
		{map[string]string{AnnotationUnderlayIPs: " , "}, []string{"10.244.0.0/24"}, "is empty"},
		{map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationVtepMAC: "zz"}, []string{"10.244.0.0/24"}, "not a 6-byte MAC"},
		{map[string]string{AnnotationUnderlayIPs: "100.64.0.1"}, []string{"10.244.0.0/33"}, "spec.podCIDRs"},
	} {
		_, err := NodeInfoFrom(testNode("bad", c.cidrs, c.ann))
		if err == nil || errors.Is(err, errNotPublished) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "node bad") {
			t.Errorf("%v: err %v, want one naming node bad and %q", c.ann, err, c.want)
		}
	}
}

func TestAnnotationPatch(t *testing.T) {
	b, err := annotationPatch(map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationBackend: "host-gw"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"annotations":{"podnet.io/backend":"host-gw","podnet.io/underlay-ips":"100.64.0.1","podnet.io/vtep-mac":null}}}`
	if string(b) != want {
		t.Fatalf("patch\n got %s\nwant %s", b, want)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	n := testNode("a", []string{"10.244.0.0/24"}, map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationBackend: "host-gw", "other": "x"})
	if !annotationsMatch(n, map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationBackend: "host-gw"}) {
		t.Fatal("matching annotations reported as different")
	}
	n.Annotations[AnnotationVtepMAC] = "0e:00:00:00:00:01"
	if annotationsMatch(n, map[string]string{AnnotationUnderlayIPs: "100.64.0.1", AnnotationBackend: "host-gw"}) {
		t.Fatal("stale vtep-mac not noticed")
	}
}

func TestMatchPools(t *testing.T) {
	p4 := datastore.Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24}
	p6 := datastore.Pool{CIDR: netip.MustParsePrefix("fd00:244::/48"), SubnetLen: 64}
	v4, v6 := netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:244:0:3::/64")
	// Pool order wins over podCIDRs order.
	got, err := MatchPools("n", []netip.Prefix{v6, v4}, []datastore.Pool{p4, p6})
	if err != nil || !reflect.DeepEqual(got, []netip.Prefix{v4, v6}) {
		t.Fatalf("got %v %v", got, err)
	}
	// A node CIDR of a family we do not use is ignored.
	if got, err := MatchPools("n", []netip.Prefix{v4, v6}, []datastore.Pool{p4}); err != nil || len(got) != 1 {
		t.Fatalf("got %v %v", got, err)
	}
	// kube-controller-manager's mask size wins over --subnet-len.
	if got, err := MatchPools("n", []netip.Prefix{netip.MustParsePrefix("10.244.4.0/25")}, []datastore.Pool{p4}); err != nil || got[0].Bits() != 25 {
		t.Fatalf("got %v %v", got, err)
	}
	for _, c := range []struct {
		cidrs []netip.Prefix
		want  string
	}{
		{[]netip.Prefix{v4}, "no IPv6 pod CIDR"},
		{[]netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), v6}, "10.99.0.0/24 is outside cluster CIDR 10.244.0.0/16"},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), v6}, "outside cluster CIDR"},
	} {
		if _, err := MatchPools("n", c.cidrs, []datastore.Pool{p4, p6}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.cidrs, err, c.want)
		}
	}
}

func TestNetworkReady(t *testing.T) {
	n := testNode("a", nil, nil)
	if networkReady(n) {
		t.Fatal("no condition is not ready")
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"}}
	if networkReady(n) {
		t.Fatal("True is not ready")
	}
	n.Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ConditionReason}
	if !networkReady(n) {
		t.Fatal("False/PodnetIsUp is ready")
	}
}
