package policy

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodFromAPI(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"a": "1"}},
		Spec: corev1.PodSpec{
			NodeName: "n1",
			Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080},
				{ContainerPort: 9000}, // unnamed: not a named port
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			}}},
			InitContainers: []corev1.Container{
				{Ports: []corev1.ContainerPort{{Name: "init", ContainerPort: 1}}}, // not a sidecar
				{RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "sig", ContainerPort: 3868, Protocol: corev1.ProtocolSCTP}}},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.9", PodIPs: []corev1.PodIP{
			{IP: "::ffff:10.0.0.1"}, {IP: "bogus"}, {IP: "fd00::1"}, {IP: "10.0.0.1"}}},
	}
	want := Pod{
		Namespace: "ns", Name: "p", Labels: map[string]string{"a": "1"}, Node: "n1",
		IPs:   []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Ports: []NamedPort{{"http", TCP, 8080}, {"dns", UDP, 53}, {"sig", SCTP, 3868}},
	}
	if got := PodFromAPI(p); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	p.Status.PodIPs = nil
	if got := PodFromAPI(p).IPs; !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("10.0.0.9")}) {
		t.Errorf("podIP fallback: %v", got)
	}
	p.Status.Phase = corev1.PodFailed
	if got := PodFromAPI(p).IPs; got != nil {
		t.Errorf("failed pod has IPs %v", got)
	}
}

func TestModelFromObjectsNamespaceLabel(t *testing.T) {
	m := ModelFromObjects([]*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"x": "y"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{NamespaceNameLabel: "b"}}},
		nil,
	}, []*corev1.Pod{nil}, nil)
	want := map[string]map[string]string{
		"a": {"x": "y", NamespaceNameLabel: "a"},
		"b": {NamespaceNameLabel: "b"},
	}
	if !reflect.DeepEqual(m.Namespaces, want) || len(m.Pods) != 0 {
		t.Errorf("got %v, %d pods", m.Namespaces, len(m.Pods))
	}
}

func TestParseProto(t *testing.T) {
	for s, want := range map[string]Proto{"tcp": TCP, "UDP": UDP, "Sctp": SCTP, "1": 1} {
		if got, err := ParseProto(s); err != nil || got != want {
			t.Errorf("%s: %v %v", s, got, err)
		}
		if got, _ := ParseProto(want.String()); got != want {
			t.Errorf("%v does not round-trip", want)
		}
	}
	if _, err := ParseProto("icmp"); err == nil {
		t.Error("icmp parsed")
	}
}
