package fuzzcheck

import "strings"

// PrevResults are one prevResult per spec version, in that version's
// shape, as runtimes send them (0.1.0/0.2.0 ip4/ip6, 0.3.x/0.4.0 with
// "version", 1.x without).
var PrevResults = []string{
	`{"cniVersion":"0.1.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{"nameservers":["10.1.0.53"]}}`,
	`{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1"},"ip6":{"ip":"fd01::5/64","gateway":"fd01::1"}}`,
	`{"cniVersion":"0.3.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.1.0.5/24","gateway":"10.1.0.1"}]}`,
	`{"cniVersion":"0.3.1","interfaces":[{"name":"br0","mac":"02:00:00:00:00:01"},{"name":"veth1","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":2,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"version":"6","interface":2,"address":"fd01::5/64","gateway":"fd01::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]}`,
	`{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.1.0.5/24"}],"dns":{}}`,
	`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/x"}],"ips":[{"interface":0,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":0,"address":"fd01::5/64"}],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd01::1"}]}`,
	`{"cniVersion":"1.1.0","interfaces":[{"name":"br0","mac":"02:00:00:00:00:01"},{"name":"veth1","mac":"02:00:00:00:00:02","mtu":1500},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/x","socketPath":"/x","pciID":"0000:00:01.0"}],"ips":[{"interface":2,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":2,"address":"fd01::5/64","gateway":"fd01::1"},{"interface":0,"address":"10.1.0.1/24"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0}],"dns":{"nameservers":["10.1.0.53"],"domain":"cluster.local","search":["a","b"],"options":["ndots:5"]}}`,
	// Awkward but legal shapes.
	`{"cniVersion":"1.1.0"}`,
	`{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24","interface":7}]}`,
	`{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24","interface":-1}]}`,
	`{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24"}}`,
}

// Conf wraps a prevResult into a chained plugin's config of the given
// cniVersion and type.
func Conf(typ, ver, extra, prev string) []byte {
	var b strings.Builder
	b.WriteString(`{"cniVersion":"` + ver + `","name":"net1","type":"` + typ + `"`)
	if extra != "" {
		b.WriteString("," + extra)
	}
	if prev != "" {
		b.WriteString(`,"prevResult":` + prev)
	}
	b.WriteString("}")
	return []byte(b.String())
}

// VersionOf returns the cniVersion a PrevResults entry carries.
func VersionOf(prev string) string {
	const k = `"cniVersion":"`
	i := strings.Index(prev, k)
	if i < 0 {
		return "1.1.0"
	}
	rest := prev[i+len(k):]
	return rest[:strings.IndexByte(rest, '"')]
}

// CNIArgs are CNI_ARGS strings runtimes send, good and bad.
var CNIArgs = []string{
	"",
	"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234",
	"IP=10.1.0.9",
	"IP=10.1.0.9/24,fd01::9;GATEWAY=10.1.0.1",
	"MAC=02:00:00:00:00:09",
	"IgnoreUnknown=true;MAC=0a:58:0a:f4:00:02",
	"IP=;MAC=",
	"=;;=x;IP",
	"IP=999.1.1.1",
	"MAC=ff:ff:ff:ff:ff:ff",
}
