package portmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
)

// DefaultDataDir holds the lock that serialises portmap's read-modify-write
// of the shared table when the config has no "dataDir".
const DefaultDataDir = "/run/podnet/portmap"

// DefaultMarkBit is the packet mark bit that flags hairpin connections for
// masquerade (the reference plugin's default).
const DefaultMarkBit = 13

// Protocol numbers of the mappable transport protocols.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

var protoNames = map[string]uint8{"tcp": protoTCP, "udp": protoUDP, "sctp": protoSCTP}

func protoName(p uint8) string {
	for n, v := range protoNames {
		if v == p {
			return n
		}
	}
	return fmt.Sprintf("proto%d", p)
}

// PortMapping is one entry of runtimeConfig.portMappings. Keys are matched
// case-insensitively: CNI conventions write hostPort/containerPort/protocol/
// hostIP, containerd's CRI sends HostPort/ContainerPort/Protocol/HostIP.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// mappingField is the error raised while decoding one mapping: the field
// (in its canonical spelling) and what is wrong.
type mappingField struct {
	field string
	msg   string
}

func (e *mappingField) Error() string { return e.field + ": " + e.msg }

// UnmarshalJSON decodes a mapping with case-insensitive keys. Unknown keys
// are ignored (runtimes may add their own); the same key twice in
// different spellings is an error, since it is ambiguous.
func (m *PortMapping) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return &mappingField{"", "expected an object"}
	}
	*m = PortMapping{}
	canon := map[string]string{"hostport": "hostPort", "containerport": "containerPort", "protocol": "protocol", "hostip": "hostIP"}
	seen := map[string]string{}
	for k, v := range raw {
		c, ok := canon[strings.ToLower(k)]
		if !ok {
			continue
		}
		if other, dup := seen[c]; dup {
			return &mappingField{c, fmt.Sprintf("given twice, as %q and %q", other, k)}
		}
		seen[c] = k
		if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue
		}
		var err error
		switch c {
		case "hostPort":
			err = json.Unmarshal(v, &m.HostPort)
		case "containerPort":
			err = json.Unmarshal(v, &m.ContainerPort)
		case "protocol":
			err = json.Unmarshal(v, &m.Protocol)
		case "hostIP":
			err = json.Unmarshal(v, &m.HostIP)
		}
		if err != nil {
			want := "an integer"
			if c == "protocol" || c == "hostIP" {
				want = "a string"
			}
			return &mappingField{c, fmt.Sprintf("expected %s, got %s", want, bytes.TrimSpace(v))}
		}
	}
	return nil
}

// netConf is the JSON the runtime passes.
type netConf struct {
	types.NetConf
	DataDir              string        `json:"dataDir,omitempty"`
	Backend              *string       `json:"backend,omitempty"`
	SNAT                 *bool         `json:"snat,omitempty"`
	MasqAll              bool          `json:"masqAll,omitempty"`
	MarkMasqBit          *int          `json:"markMasqBit,omitempty"`
	ExternalSetMarkChain *string       `json:"externalSetMarkChain,omitempty"`
	ConditionsV4         *[]string     `json:"conditionsV4,omitempty"`
	ConditionsV6         *[]string     `json:"conditionsV6,omitempty"`
	RuntimeConfig        runtimeConfig `json:"runtimeConfig,omitempty"`
}

type runtimeConfig struct {
	PortMappings []json.RawMessage `json:"portMappings,omitempty"`
}

// Mapping is a validated port mapping.
type Mapping struct {
	HostPort      uint16
	ContainerPort uint16
	Proto         uint8
	HostIP        net.IP // nil: any local address of the families the pod has
}

func (m Mapping) String() string {
	h := "*"
	if m.HostIP != nil {
		h = m.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%d -> :%d", protoName(m.Proto), h, m.HostPort, m.ContainerPort)
}

// Config is the validated portmap configuration for one attachment.
type Config struct {
	Network  string
	DataDir  string
	SNAT     bool
	MasqAll  bool
	MarkBit  uint
	Mappings []Mapping
	Prev     *current.Result // nil when the config had none
	Valid    []types.GCAttachment
}

// Mark is the packet mark bit value.
func (c *Config) Mark() uint32 { return 1 << c.MarkBit }

// parseBase decodes stdin and the table-wide options without looking at
// the mappings or prevResult: what DEL, GC and STATUS need.
func parseBase(stdin []byte) (*netConf, *Config, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, nil, err
	}
	c := &Config{Network: conf.Name, DataDir: conf.DataDir, SNAT: true, MasqAll: conf.MasqAll, MarkBit: DefaultMarkBit, Valid: conf.ValidAttachments}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if !filepath.IsAbs(c.DataDir) {
		return nil, nil, cnierr.Field(name, "dataDir", "%q is not an absolute path", c.DataDir)
	}
	c.DataDir = filepath.Clean(c.DataDir)
	if conf.SNAT != nil {
		c.SNAT = *conf.SNAT
	}
	if conf.Backend != nil && *conf.Backend != "nftables" {
		if *conf.Backend == "iptables" {
			return nil, nil, cnierr.Unsupported(name, "backend", `podnet's portmap programs nftables only; remove "backend" or set it to "nftables"`)
		}
		return nil, nil, cnierr.Field(name, "backend", "%q is not a backend; the only one is \"nftables\"", *conf.Backend)
	}
	if conf.ExternalSetMarkChain != nil {
		return nil, nil, cnierr.Unsupported(name, "externalSetMarkChain", "it names an iptables chain; podnet's portmap uses nftables and marks hairpin traffic itself with markMasqBit")
	}
	if conf.ConditionsV4 != nil && len(*conf.ConditionsV4) > 0 {
		return nil, nil, cnierr.Unsupported(name, "conditionsV4", "needs an iptables/nft rule parser, which podnet does not have; filter host-port traffic in a separate nftables table instead")
	}
	if conf.ConditionsV6 != nil && len(*conf.ConditionsV6) > 0 {
		return nil, nil, cnierr.Unsupported(name, "conditionsV6", "needs an iptables/nft rule parser, which podnet does not have; filter host-port traffic in a separate nftables table instead")
	}
	if conf.MarkMasqBit != nil {
		if b := *conf.MarkMasqBit; b < 0 || b > 31 {
			return nil, nil, cnierr.Field(name, "markMasqBit", "%d is out of range 0-31", b)
		}
		c.MarkBit = uint(*conf.MarkMasqBit)
	}
	return conf, c, nil
}

// ParseConfig decodes and validates stdin: the options, every mapping
// (errors name the entry, e.g. runtimeConfig.portMappings[1].hostPort) and
// prevResult when present.
func ParseConfig(stdin []byte) (*Config, error) {
	conf, c, err := parseBase(stdin)
	if err != nil {
		return nil, err
	}
	type key struct {
		proto uint8
		port  uint16
		ip    string
	}
	seen := map[key]int{}
	for i, raw := range conf.RuntimeConfig.PortMappings {
		field := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		var pm PortMapping
		if err := json.Unmarshal(raw, &pm); err != nil {
			var mf *mappingField
			if errors.As(err, &mf) {
				if mf.field != "" {
					field += "." + mf.field
				}
				return nil, cnierr.Field(name, field, "%s", mf.msg)
			}
			return nil, cnierr.Field(name, field, "%v", err)
		}
		m, err := validMapping(field, pm)
		if err != nil {
			return nil, err
		}
		k := key{m.Proto, m.HostPort, m.HostIP.String()}
		if j, dup := seen[k]; dup {
			return nil, cnierr.Field(name, field, "%s maps the same host port as runtimeConfig.portMappings[%d]", m, j)
		}
		seen[k] = i
		c.Mappings = append(c.Mappings, m)
	}
	c.Prev, err = cniplugin.PrevResult(name, &conf.NetConf)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func validMapping(field string, pm PortMapping) (Mapping, error) {
	var m Mapping
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return m, cnierr.Field(name, field+".hostPort", "%d out of range (1-65535)", pm.HostPort)
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return m, cnierr.Field(name, field+".containerPort", "%d out of range (1-65535)", pm.ContainerPort)
	}
	m.HostPort, m.ContainerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	p := strings.ToLower(strings.TrimSpace(pm.Protocol))
	if p == "" {
		p = "tcp"
	}
	proto, ok := protoNames[p]
	if !ok {
		return m, cnierr.Field(name, field+".protocol", "%q is not tcp, udp or sctp", pm.Protocol)
	}
	m.Proto = proto
	if pm.HostIP != "" {
		ip := net.ParseIP(strings.TrimSpace(pm.HostIP))
		if ip == nil {
			return m, cnierr.Field(name, field+".hostIP", "%q is not an IP address", pm.HostIP)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		m.HostIP = ip
	}
	return m, nil
}

// PodAddrs picks the pod's first IPv4 and first IPv6 address on ifName from
// res, the reference's rule: an address whose interface index names
// another interface, or one outside a sandbox, is skipped.
func PodAddrs(res *current.Result, ifName string) (v4, v6 net.IP) {
	if res == nil {
		return nil, nil
	}
	for _, ip := range res.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(res.Interfaces) && (res.Interfaces[i].Name != ifName || res.Interfaces[i].Sandbox == "") {
				continue
			}
		}
		if a := ip.Address.IP.To4(); a != nil {
			if v4 == nil {
				v4 = a
			}
		} else if a := ip.Address.IP.To16(); a != nil && v6 == nil {
			v6 = a
		}
	}
	return v4, v6
}
