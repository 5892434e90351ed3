package tuning

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
)

// DefaultDataDir is where the original values are saved when the config
// has no "dataDir".
const DefaultDataDir = "/var/lib/cni/tuning"

// AllowlistFile is the optional sysctl allowlist: one regular expression a
// line; when the file exists every sysctl key must match one of them. A
// variable so tests can point it elsewhere.
var AllowlistFile = "/etc/cni/tuning/allowlist.conf"

// maxMTU is the largest MTU a Linux link can carry (IP_MAX_MTU for the
// attribute's 16-bit users, and what every driver caps at or below).
const maxMTU = 65535

// netConf is the JSON the runtime passes, with the reference plugin's
// field names.
type netConf struct {
	types.NetConf
	DataDir  string     `json:"dataDir,omitempty"`
	Sysctl   *sysctlMap `json:"sysctl,omitempty"`
	Mac      string     `json:"mac,omitempty"`
	Promisc  *bool      `json:"promisc,omitempty"`
	MTU      int        `json:"mtu,omitempty"`
	TxQLen   *int       `json:"txQLen,omitempty"`
	Allmulti *bool      `json:"allmulti,omitempty"`

	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	Args *struct {
		CNI *cniArgs `json:"cni,omitempty"`
	} `json:"args,omitempty"`
}

// cniArgs are the per-attachment overrides in args.cni.
type cniArgs struct {
	Sysctl   *sysctlMap `json:"sysctl,omitempty"`
	Mac      *string    `json:"mac,omitempty"`
	Promisc  *bool      `json:"promisc,omitempty"`
	MTU      *int       `json:"mtu,omitempty"`
	Allmulti *bool      `json:"allmulti,omitempty"`
	TxQLen   *int       `json:"txQLen,omitempty"`
}

// envArgs is CNI_ARGS: MAC=... like the reference.
type envArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString `json:"mac,omitempty"`
}

// sysctlEntry is one "sysctl" member as written in the config.
type sysctlEntry struct {
	Key, Value string
}

// sysctlMap keeps the members of a JSON object in order and notes a key
// written twice (encoding/json would silently keep the last one), which
// ParseConfig refuses; DEL and GC do not look at it (docs/del.md).
type sysctlMap struct {
	entries []sysctlEntry
	dup     string // the first key given twice, if any
}

func (m *sysctlMap) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return cnierr.New(cnierr.DecodingFailure, name, "field %q: expected an object of key/string pairs, got JSON %s", "sysctl", jsonKind(tok))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // object keys are always strings
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		s, ok := v.(string)
		if !ok {
			return cnierr.New(cnierr.DecodingFailure, name, "field %q: key %q: expected a string value, got JSON %s", "sysctl", key, jsonKind(v))
		}
		if seen[key] && m.dup == "" {
			m.dup = key
		}
		seen[key] = true
		m.entries = append(m.entries, sysctlEntry{Key: key, Value: s})
	}
	_, err = dec.Token() // '}'
	return err
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64, json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Delim:
		if v == json.Delim('[') {
			return "array"
		}
	}
	return fmt.Sprintf("%v", v)
}

// Sysctl is one resolved sysctl: Key is the "/"-separated path under
// /proc/sys with IFNAME replaced ("net/ipv4/conf/eth0/rp_filter"), Orig the
// key as the config wrote it.
type Sysctl struct {
	Orig  string
	Key   string
	Value string
}

// Config is the validated, merged tuning configuration for one attachment.
type Config struct {
	Network  string
	DataDir  string
	Sysctls  []Sysctl
	Mac      net.HardwareAddr // nil: leave alone
	Promisc  *bool
	MTU      int // 0: leave alone
	TxQLen   *int
	Allmulti *bool

	prev *netConf
}

// linkChanges reports whether any link attribute is configured.
func (c *Config) linkChanges() bool {
	return c.Mac != nil || c.Promisc != nil || c.MTU != 0 || c.TxQLen != nil || c.Allmulti != nil
}

// parseBase decodes stdin without validating the tuning fields: what DEL
// and GC need (they must work even if the allowlist changed since ADD).
func parseBase(stdin []byte) (*netConf, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, err
	}
	if conf.DataDir == "" {
		conf.DataDir = DefaultDataDir
	}
	// The network name is a directory under dataDir that GC sweeps: a name
	// such as "../.." must not point it at the rest of the file system.
	if conf.Name != "" {
		if err := utils.ValidateNetworkName(conf.Name); err != nil {
			return nil, cnierr.Field(name, "name", "%q is not a valid network name: %s (letters, digits, '_', '.' and '-', starting with a letter or digit)", conf.Name, err.Msg)
		}
	}
	if !filepath.IsAbs(conf.DataDir) {
		return nil, cnierr.Field(name, "dataDir", "%q is not an absolute path", conf.DataDir)
	}
	conf.DataDir = filepath.Clean(conf.DataDir)
	return conf, nil
}

// ParseConfig decodes and validates stdin for the attachment on ifName,
// merging CNI_ARGS (cniArgs), runtimeConfig and args.cni the way the
// reference plugin does: later sources win for the MAC (CNI_ARGS MAC,
// then runtimeConfig.mac, then args.cni.mac), args.cni overrides the other
// fields, and args.cni.sysctl adds to or overrides "sysctl" key by key.
func ParseConfig(stdin []byte, ifName, cniArgsEnv string) (*Config, error) {
	conf, err := parseBase(stdin)
	if err != nil {
		return nil, err
	}
	c := &Config{Network: conf.Name, DataDir: conf.DataDir, prev: conf}
	if conf.Sysctl != nil && conf.Sysctl.dup != "" {
		return nil, cnierr.Field(name, "sysctl", "key %q is given twice", conf.Sysctl.dup)
	}
	if a := conf.Args; a != nil && a.CNI != nil && a.CNI.Sysctl != nil && a.CNI.Sysctl.dup != "" {
		return nil, cnierr.Field(name, "args.cni.sysctl", "key %q is given twice", a.CNI.Sysctl.dup)
	}

	mac := conf.Mac
	macField := "mac"
	if cniArgsEnv != "" {
		e := envArgs{}
		if err := types.LoadArgs(cniArgsEnv, &e); err != nil {
			return nil, cnierr.Env(name, "CNI_ARGS", "%v", err)
		}
		if e.MAC != "" {
			mac, macField = string(e.MAC), "CNI_ARGS MAC"
		}
	}
	if conf.RuntimeConfig.Mac != "" {
		mac, macField = conf.RuntimeConfig.Mac, "runtimeConfig.mac"
	}
	mtu, mtuField := conf.MTU, "mtu"
	txq, txqField := conf.TxQLen, "txQLen"
	c.Promisc, c.Allmulti = conf.Promisc, conf.Allmulti
	var sysctls []sysctlEntry
	if conf.Sysctl != nil {
		sysctls = conf.Sysctl.entries
	}
	var argSysctls []sysctlEntry
	if conf.Args != nil && conf.Args.CNI != nil {
		a := conf.Args.CNI
		if a.Mac != nil {
			mac, macField = *a.Mac, "args.cni.mac"
		}
		if a.MTU != nil {
			mtu, mtuField = *a.MTU, "args.cni.mtu"
		}
		if a.TxQLen != nil {
			txq, txqField = a.TxQLen, "args.cni.txQLen"
		}
		if a.Promisc != nil {
			c.Promisc = a.Promisc
		}
		if a.Allmulti != nil {
			c.Allmulti = a.Allmulti
		}
		if a.Sysctl != nil {
			argSysctls = a.Sysctl.entries
		}
	}
	// "promisc": false was a no-op in the reference; keep that meaning so
	// existing configs do not start turning promiscuous mode off.
	if c.Promisc != nil && !*c.Promisc && !(conf.Args != nil && conf.Args.CNI != nil && conf.Args.CNI.Promisc != nil) {
		c.Promisc = nil
	}

	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return nil, cnierr.Field(name, macField, "%q is not an Ethernet MAC address (want six hex pairs such as 0a:58:0a:f4:00:02)", mac)
		}
		if hw[0]&0x01 != 0 {
			return nil, cnierr.Field(name, macField, "%q is a multicast address; a link needs a unicast MAC (first octet even)", mac)
		}
		c.Mac = hw
	}
	if mtu < 0 {
		return nil, cnierr.Field(name, mtuField, "%d is negative; leave it out or use a positive MTU", mtu)
	}
	if mtu > maxMTU {
		return nil, cnierr.Field(name, mtuField, "%d is above the maximum %d", mtu, maxMTU)
	}
	c.MTU = mtu
	if txq != nil && *txq < 0 {
		return nil, cnierr.Field(name, txqField, "%d is negative", *txq)
	}
	c.TxQLen = txq

	if err := validIfName(ifName); err != nil {
		return nil, err
	}
	c.Sysctls, err = resolveSysctls(sysctls, argSysctls, ifName)
	if err != nil {
		return nil, err
	}
	if err := checkAllowlist(c.Sysctls); err != nil {
		return nil, err
	}
	return c, nil
}

func validIfName(ifName string) error {
	if ifName == "" || ifName == "." || ifName == ".." || strings.ContainsAny(ifName, "/:") {
		return cnierr.Env(name, "CNI_IFNAME", "%q is not a valid interface name", ifName)
	}
	return nil
}

// resolveSysctls normalises every key, substitutes IFNAME, rejects keys
// outside net/ and keys that name the same file twice, then lets args.cni
// entries override or extend the config's.
func resolveSysctls(conf, args []sysctlEntry, ifName string) ([]Sysctl, error) {
	var out []Sysctl
	index := map[string]int{}
	for _, e := range conf {
		s, err := resolveKey(e, ifName, "sysctl")
		if err != nil {
			return nil, err
		}
		if i, dup := index[s.Key]; dup {
			return nil, cnierr.Field(name, "sysctl", "keys %q and %q name the same sysctl %s", out[i].Orig, e.Key, s.Key)
		}
		index[s.Key] = len(out)
		out = append(out, s)
	}
	argIndex := map[string]string{}
	for _, e := range args {
		s, err := resolveKey(e, ifName, "args.cni.sysctl")
		if err != nil {
			return nil, err
		}
		if other, dup := argIndex[s.Key]; dup {
			return nil, cnierr.Field(name, "args.cni.sysctl", "keys %q and %q name the same sysctl %s", other, e.Key, s.Key)
		}
		argIndex[s.Key] = e.Key
		if i, ok := index[s.Key]; ok {
			out[i] = s
			continue
		}
		index[s.Key] = len(out)
		out = append(out, s)
	}
	return out, nil
}

// NormalizeKey turns a sysctl key into its path under /proc/sys: the dotted
// form ("net.ipv4.ip_forward") has its dots turned into slashes; a key that
// already contains a slash ("net/ipv4/conf/eth0.5/rp_filter") is taken as is,
// which keeps dots in interface names. IFNAME (the first occurrence, as in
// the reference) becomes ifName after that, so an ifName with dots stays
// one path component.
func NormalizeKey(key, ifName string) string {
	k := strings.Trim(strings.TrimSpace(key), "/")
	if !strings.Contains(k, "/") {
		k = strings.ReplaceAll(k, ".", "/")
	}
	if ifName != "" {
		k = strings.Replace(k, "IFNAME", ifName, 1)
	}
	return k
}

func resolveKey(e sysctlEntry, ifName, field string) (Sysctl, error) {
	k := NormalizeKey(e.Key, ifName)
	parts := strings.Split(k, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return Sysctl{}, cnierr.Field(name, field, "key %q is not a valid sysctl name", e.Key)
		}
	}
	if parts[0] != "net" || len(parts) < 2 {
		return Sysctl{}, cnierr.Field(name, field, "key %q is outside net.: tuning only sets network sysctls (net.*), which belong to the pod's network namespace", e.Key)
	}
	if strings.ContainsAny(e.Value, "\n\x00") {
		return Sysctl{}, cnierr.Field(name, field, "key %q: value %q contains a newline or NUL", e.Key, e.Value)
	}
	return Sysctl{Orig: e.Key, Key: k, Value: e.Value}, nil
}

// checkAllowlist enforces AllowlistFile when it exists: every key, as
// written in the config, must match one of its regular expressions (the
// reference plugin's rule; the match is unanchored unless the pattern
// anchors itself).
func checkAllowlist(sysctls []Sysctl) error {
	if len(sysctls) == 0 {
		return nil
	}
	pats, err := readAllowlist(AllowlistFile)
	if err != nil {
		return err
	}
	if pats == nil {
		return nil
	}
	for _, s := range sysctls {
		ok := false
		for _, p := range pats {
			if p.MatchString(s.Orig) {
				ok = true
				break
			}
		}
		if !ok {
			return cnierr.Field(name, "sysctl", "key %q is not allowed by the allowlist %s (%d patterns)", s.Orig, AllowlistFile, len(pats))
		}
	}
	return nil
}

// readAllowlist returns nil, nil when the file does not exist.
func readAllowlist(path string) ([]*regexp.Regexp, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, cnierr.New(cnierr.IOFailure, name, "read sysctl allowlist: %v", err)
	}
	defer f.Close()
	pats := []*regexp.Regexp{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		re, err := regexp.Compile(l)
		if err != nil {
			return nil, cnierr.New(cnierr.InvalidConfig, name, "sysctl allowlist %s line %d: %v", path, line, err)
		}
		pats = append(pats, re)
	}
	if err := sc.Err(); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, name, "read sysctl allowlist %s: %v", path, err)
	}
	return pats, nil
}
