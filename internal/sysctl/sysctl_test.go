package sysctl

import "testing"

func TestPath(t *testing.T) {
	cases := map[string]string{
		"net.ipv4.ip_forward":                   "/proc/sys/net/ipv4/ip_forward",
		"net/ipv4/ip_forward":                   "/proc/sys/net/ipv4/ip_forward",
		"/net/ipv6/conf/eth0.5/accept_dad":      "/proc/sys/net/ipv6/conf/eth0.5/accept_dad",
		"/proc/sys/net/ipv4/conf/all/rp_filter": "/proc/sys/net/ipv4/conf/all/rp_filter",
	}
	for in, want := range cases {
		if got := Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGet(t *testing.T) {
	v, err := Get("kernel/ostype")
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	if v != "Linux" {
		t.Errorf("kernel/ostype = %q", v)
	}
	if _, err := Get("net/does/not/exist"); err == nil {
		t.Error("expected an error for a missing parameter")
	}
}
