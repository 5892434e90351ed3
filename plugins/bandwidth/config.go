package bandwidth

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/tc"
)

// Limits are the four shaping fields, at the top level of the config or in
// runtimeConfig.bandwidth (CONVENTIONS.md "bandwidth" capability). Rates
// are bits per second, bursts bits; 0 or absent means "not shaped".
type Limits struct {
	IngressRate  *uint64 `json:"ingressRate,omitempty"`
	IngressBurst *uint64 `json:"ingressBurst,omitempty"`
	EgressRate   *uint64 `json:"egressRate,omitempty"`
	EgressBurst  *uint64 `json:"egressBurst,omitempty"`
}

type rawConf struct {
	types.NetConf
	// The Limits fields, spelled out: an embedded struct's name would
	// appear in JSON error messages ("Limits.ingressRate").
	IngressRate  *uint64 `json:"ingressRate,omitempty"`
	IngressBurst *uint64 `json:"ingressBurst,omitempty"`
	EgressRate   *uint64 `json:"egressRate,omitempty"`
	EgressBurst  *uint64 `json:"egressBurst,omitempty"`

	// unshapedSubnets and shapedSubnets (upstream development versions)
	// are unknown to the reference v1.9.1, which ignores them and shapes
	// all of the pod's traffic: so does podnet (docs/plugins/bandwidth.md).

	RuntimeConfig struct {
		Bandwidth *Limits `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// Shape is one shaped direction: what was asked and the tbf that does it.
type Shape struct {
	RateBits  uint64
	BurstBits uint64
	TBF       tc.TBF
	From      string // "config" or "runtimeConfig", for messages
}

// Config is a parsed, validated bandwidth config.
type Config struct {
	types.NetConf
	// Ingress shapes traffic to the pod (tbf on the host veth); Egress
	// traffic from the pod (tbf on the ifb). nil means unshaped.
	Ingress *Shape
	Egress  *Shape
}

// Shaped reports whether any direction is shaped.
func (c *Config) Shaped() bool { return c.Ingress != nil || c.Egress != nil }

// decode reads stdin without validating the limits (DEL and GC must work
// with any config that decodes).
func decode(stdin []byte) (*rawConf, error) {
	raw := &rawConf{}
	if err := cniplugin.Decode(name, stdin, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// parseConfig decodes and validates stdin. ticksPerUsec is the scheduler
// clock (tc.TicksPerUsec on a real node) used for the tbf parameters.
func parseConfig(stdin []byte, ticksPerUsec float64) (*Config, error) {
	raw, err := decode(stdin)
	if err != nil {
		return nil, err
	}
	return validate(raw, ticksPerUsec)
}

func validate(raw *rawConf, ticksPerUsec float64) (*Config, error) {
	c := &Config{NetConf: raw.NetConf}
	rt := raw.RuntimeConfig.Bandwidth
	if rt == nil {
		rt = &Limits{}
	}
	// Per direction, the static config wins where it sets the direction at
	// all (rate or burst present); otherwise runtimeConfig applies.
	pick := func(cr, cb, rr, rb *uint64) (rate, burst *uint64, prefix, from string) {
		if cr != nil || cb != nil {
			return cr, cb, "", "config"
		}
		return rr, rb, "runtimeConfig.bandwidth.", "runtimeConfig"
	}
	var errs []error
	var err error
	r, b, pfx, from := pick(raw.IngressRate, raw.IngressBurst, rt.IngressRate, rt.IngressBurst)
	c.Ingress, err = shape(val(r), val(b), pfx+"ingressRate", pfx+"ingressBurst", from, ticksPerUsec)
	errs = append(errs, err)
	r, b, pfx, from = pick(raw.EgressRate, raw.EgressBurst, rt.EgressRate, rt.EgressBurst)
	c.Egress, err = shape(val(r), val(b), pfx+"egressRate", pfx+"egressBurst", from, ticksPerUsec)
	errs = append(errs, err)
	for _, e := range errs {
		if e != nil {
			return nil, e // the first error, keeping its CNI code
		}
	}
	return c, nil
}

func val(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// shape validates one direction like the reference plugin (rate and burst
// both set or neither, burst at most 4GB) plus what tbf needs to work (a
// rate of at least one byte per second, a burst of at least one byte).
func shape(rate, burst uint64, rateField, burstField, from string, ticksPerUsec float64) (*Shape, error) {
	switch {
	case rate == 0 && burst == 0:
		return nil, nil
	case burst == 0:
		return nil, cnierr.Field(name, burstField, "must be set when %q is set (burst in bits)", rateField)
	case rate == 0:
		return nil, cnierr.Field(name, rateField, "must be set when %q is set (rate in bits per second)", burstField)
	}
	p, err := tc.Params(rate, burst, ticksPerUsec)
	switch {
	case errors.Is(err, tc.ErrRateTooLow):
		return nil, cnierr.Field(name, rateField, "%d is below the minimum %d bits per second", rate, tc.MinRateBits)
	case errors.Is(err, tc.ErrBurstTooLarge):
		return nil, cnierr.Field(name, burstField, "%d bits: burst cannot be more than 4GB (%d bits)", burst, tc.MaxBurstBits-8)
	case errors.Is(err, tc.ErrBurstZero):
		return nil, cnierr.Field(name, burstField, "%d is below the minimum 8 bits (one byte)", burst)
	case err != nil:
		return nil, cnierr.Field(name, rateField, "%v", err)
	}
	return &Shape{RateBits: rate, BurstBits: burst, TBF: p, From: from}, nil
}

// Ifb naming. The primary name is the reference plugin's: "bwp" and the
// first 12 hex digits of sha512(network name + container ID), so a node
// moving between the reference plugin and podnet finds the same device on
// DEL. That name ignores the interface name; when a second attachment of
// the same container on the same network needs an ifb, it gets the
// alternate name, which hashes the interface name in too.
//
// Which attachment an ifb serves is written in its alias (IFLA_IFALIAS, set
// when the device is created, shown by `ip link`), so GC can find podnet's
// ifbs of a network without any state file, and an ifb never outlives its
// label: see aliasFor.
const (
	ifbPrefix  = "bwp"
	ifbNameLen = 15 // IFNAMSIZ - 1
	aliasTag   = "podnet-bandwidth"
	aliasMax   = 255 // IFALIASZ - 1
)

func hashName(s string) string {
	sum := sha512.Sum512([]byte(s))
	return (ifbPrefix + fmt.Sprintf("%x", sum))[:ifbNameLen]
}

// ifbNames returns the primary and alternate ifb names for an attachment.
func ifbNames(network, containerID, ifname string) (primary, alternate string) {
	return hashName(network + containerID), hashName(network + containerID + "/" + ifname)
}

// netField is how an alias names the network.
func netField(network string) string {
	n := "net=" + network
	// Any whitespace (strings.Fields splits on \v, \f, \r, U+0085, ... too)
	// would break aliasNetwork's parse: hash such names.
	if len(aliasTag)+1+len(n) > 100 || strings.IndexFunc(network, unicode.IsSpace) >= 0 {
		sum := sha256.Sum256([]byte(network))
		n = fmt.Sprintf("net=sha256:%x", sum[:8])
	}
	return n
}

// aliasFor is the alias of the ifb of (network, containerID, ifname):
// "podnet-bandwidth net=NET cid=ID if=IFNAME", with hashes standing in for
// values too long for the kernel's 255-byte alias.
func aliasFor(network, containerID, ifname string) string {
	a := fmt.Sprintf("%s %s cid=%s if=%s", aliasTag, netField(network), containerID, ifname)
	if len(a) > aliasMax || strings.IndexFunc(containerID+ifname, unicode.IsSpace) >= 0 {
		sum := sha256.Sum256([]byte(containerID + "\x00" + ifname))
		a = fmt.Sprintf("%s %s att=sha256:%x", aliasTag, netField(network), sum[:16])
	}
	return a
}

// aliasNetwork reports whether alias labels a podnet ifb of network.
func aliasNetwork(alias, network string) bool {
	f := strings.Fields(alias)
	return len(f) >= 2 && f[0] == aliasTag && f[1] == netField(network)
}
