package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func good() Config {
	return Config{
		NodeName:     "n1",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/48")},
		Datastore:    DatastoreConfig{Endpoints: []string{"http://127.0.0.1:2379"}},
	}.WithDefaults()
}

func TestDefaults(t *testing.T) {
	c := good()
	if c.VNI != 1 || c.Port != 8472 || c.Backend != "vxlan" || c.StateDir != "/run/podnet" || c.SubnetLenV4 != 24 || c.SubnetLenV6 != 64 || c.ResyncInterval != 5*time.Second {
		t.Fatalf("%+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.NodeName = "" }, `field "nodeName"`},
		{func(c *Config) { c.NodeName = "a/b" }, `field "nodeName"`},
		{func(c *Config) { c.ClusterCIDRs = nil }, `field "clusterCIDRs": empty`},
		{func(c *Config) { c.ClusterCIDRs[0] = netip.MustParsePrefix("10.244.1.2/16") }, `has host bits set: use 10.244.0.0/16`},
		{func(c *Config) { c.ClusterCIDRs = append(c.ClusterCIDRs, netip.MustParsePrefix("10.1.0.0/16")) }, `at most one IPv4 and one IPv6`},
		{func(c *Config) { c.SubnetLenV4 = 16 }, `field "subnetLenV4": /16 does not fit cluster CIDR 10.244.0.0/16`},
		{func(c *Config) { c.SubnetLenV4 = 31 }, `field "subnetLenV4"`},
		{func(c *Config) { c.ClusterCIDRs[1] = netip.MustParsePrefix("fd00::/16") }, `field "subnetLenV6": /64 in fd00::/16 makes`},
		{func(c *Config) { c.Backend = "ipip" }, `field "backend": "ipip": must be vxlan, host-gw or auto`},
		{func(c *Config) { c.VNI = 1 << 24 }, `field "vni"`},
		{func(c *Config) { c.Port = 70000 }, `field "port"`},
		{func(c *Config) { c.MTU = 1000 }, `field "mtu": 1000: must be 0 (auto) or 1280..65535`},
		{func(c *Config) { c.Underlay = "10.0.0.0/33" }, `field "underlay"`},
		{func(c *Config) { c.Underlay = "averyveryverylongname" }, `field "underlay"`},
		{func(c *Config) { c.StateDir = "run" }, `field "stateDir"`},
		{func(c *Config) { c.Datastore.Endpoints = nil }, `field "datastore.endpoints": empty`},
		{func(c *Config) { c.Datastore.Endpoints = []string{"127.0.0.1:2379"} }, `is not an http(s)://host:port URL`},
		{func(c *Config) { c.Datastore.CertFile = "/c.pem" }, `field "datastore.certFile"`},
		{func(c *Config) { c.Datastore.Type = "consul" }, `field "datastore.type"`},
		{func(c *Config) { c.Datastore.LeaseTTL = time.Second }, `field "datastore.leaseTTL"`},
	} {
		cfg := good()
		c.mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want error containing %q, got %v", c.want, err)
		}
	}
}

func TestUnderlaySpec(t *testing.T) {
	for in, want := range map[string]string{"": "|invalid Prefix", "auto": "|invalid Prefix", "eth0": "eth0|invalid Prefix", "100.64.0.7/24": "|100.64.0.0/24"} {
		n, p := Config{Underlay: in}.underlaySpec()
		if got := n + "|" + p.String(); got != want {
			t.Errorf("%q: %s want %s", in, got, want)
		}
	}
}
