package policy

import "testing"

func TestRenderProfiles(t *testing.T) {
	rs := handRuleset()
	rs.Problems = []string{"policy app/broken: bad\nselector"}
	got := Render(rs)
	want := `# node n1: 3 isolated pods, 3 profiles
# problem: policy app/broken: bad selector
table inet podnet-policy {
	map ing4 {
		type ipv4_addr : verdict
		elements = {
			10.0.0.1 : jump ingress-aaaaaaaaaaaa,  # app/web
			10.0.0.2 : jump ingress-bbbbbbbbbbbb,  # app/db
			10.0.0.3 : jump ingress-aaaaaaaaaaaa  # app/web-2
		}
	}
	map ing6 {
		type ipv6_addr : verdict
		elements = {
			fd00::1 : jump ingress-aaaaaaaaaaaa  # app/web
		}
	}
	map egr4 {
		type ipv4_addr : verdict
		elements = {
			10.0.0.2 : jump egress-cccccccccccc  # app/db
		}
	}
	map egr6 {
		type ipv6_addr : verdict
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ip daddr vmap @ing4
		ip6 daddr vmap @ing6
		ip saddr vmap @egr4
		ip6 saddr vmap @egr6
	}
	set cidr4-c1c1c1c1c1c1 {
		type ipv4_addr
		flags interval
		elements = {
			10.1.0.0/23,
			10.1.3.0-10.1.255.255
		}
	}
	set cidr6-c2c2c2c2c2c2 {
		type ipv6_addr
		flags interval
		elements = {
			fd00:1::/125,
			fd00:1::10-fd00:1::ffff:ffff:ffff:ffff
		}
	}
	set pods4-p1p1p1p1p1p1 {
		type ipv4_addr
		elements = {
			10.0.1.1,
			10.0.1.2
		}
	}
	set pods4-p3p3p3p3p3p3 {
		type ipv4_addr
		elements = {
			10.0.1.1
		}
	}
	set pods6-p2p2p2p2p2p2 {
		type ipv6_addr
		elements = {
			fd00::10
		}
	}
	set ports-xxxxxxxxxxxx {
		type inet_proto . inet_service
		elements = {
			tcp . 80,
			tcp . 443,
			udp . 53
		}
	}

	# policies: app/db-egress
	chain egress-cccccccccccc {
		meta l4proto udp th dport 53 return  # app/db-egress egress[0]
		ip daddr @cidr4-c1c1c1c1c1c1 return  # app/db-egress egress[1]
		counter drop
	}

	# policies: app/a, app/b
	chain ingress-aaaaaaaaaaaa {
		ip saddr @pods4-p1p1p1p1p1p1 meta l4proto . th dport @ports-xxxxxxxxxxxx return  # app/a ingress[0]
		ip saddr @cidr4-c1c1c1c1c1c1 meta l4proto tcp th dport 30000-32767 return  # app/a ingress[1]
		ip6 saddr @pods6-p2p2p2p2p2p2 return  # app/b ingress[0]
		ip6 saddr @cidr6-c2c2c2c2c2c2 meta l4proto udp return  # app/b ingress[2]
		ip saddr @pods4-p3p3p3p3p3p3 return  # app/b ingress[1]
		counter drop
	}

	# policies: app/deny-all
	chain ingress-bbbbbbbbbbbb {
		counter drop
	}
}
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
