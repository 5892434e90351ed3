package cniplugin

import (
	"fmt"
	"net"
	"strings"

	"github.com/podnet/podnet/internal/cnierr"
)

// ParseMAC accepts a 6-byte unicast MAC: what a pod interface can carry.
func ParseMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("not a MAC address")
	}
	if len(m) != 6 {
		return nil, fmt.Errorf("not a 6-byte Ethernet MAC address")
	}
	if m[0]&1 != 0 {
		return nil, fmt.Errorf("is a multicast address; a pod needs a unicast MAC")
	}
	return m, nil
}

// EnvArg returns key's value in CNI_ARGS ("K=V;K=V"), "" when absent;
// other keys are ignored (runtimes pass K8S_POD_NAME and friends).
func EnvArg(envArgs, key string) string {
	for _, kv := range strings.Split(envArgs, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// MACFromEnvArgs returns MAC=... from CNI_ARGS.
func MACFromEnvArgs(envArgs string) string { return EnvArg(envArgs, "MAC") }

// MACSource is one place a pod's MAC can come from.
type MACSource struct {
	// Field is the config field ("runtimeConfig.mac"), or "CNI_ARGS" for
	// the MAC= key of CNI_ARGS.
	Field string
	Value string
}

// PodMAC picks the pod interface's MAC from sources, later ones winning
// (each plugin passes them in the reference plugin's order). nil when none
// is set. A bad value is code 4 naming CNI_ARGS, or 7 naming the field.
func PodMAC(plugin string, sources ...MACSource) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	for _, s := range sources {
		if s.Value == "" {
			continue
		}
		m, err := ParseMAC(s.Value)
		if err != nil {
			if s.Field == "CNI_ARGS" {
				return nil, cnierr.Env(plugin, "CNI_ARGS", "MAC=%s: %v", s.Value, err)
			}
			return nil, cnierr.Field(plugin, s.Field, "%q: %v", s.Value, err)
		}
		mac = m
	}
	return mac, nil
}

// RefMAC is PodMAC in the order of the reference main plugins with a "mac"
// field (macvlan, tap): the field, then CNI_ARGS MAC=, then
// runtimeConfig.mac.
func RefMAC(plugin, field, envArgs, runtimeConfig string) (net.HardwareAddr, error) {
	return PodMAC(plugin,
		MACSource{Field: "mac", Value: field},
		MACSource{Field: "CNI_ARGS", Value: MACFromEnvArgs(envArgs)},
		MACSource{Field: "runtimeConfig.mac", Value: runtimeConfig})
}
