// Package podnet is the CNI plugin of podnet's own network type "podnet":
// the plugin a cluster runs on every node next to the podnet agent. It
// reads the node state the agent writes (agent/nodestate: node.json in
// stateDir, default /run/podnet), builds a ptp configuration for it — the
// node's subnet(s) as host-local ranges with the agent's gateway, a default
// route per family, the node's pod MTU, no masquerade (the agent's
// podnet-nat table does that for the whole node) — and runs podnet's ptp
// plugin in-process with it. Every verb is ptp's; this package only adds
// the translation, so the pod wiring is not duplicated.
//
// Why routed veth (ptp) and not a bridge: the agent's datapath is routed
// (one route per remote node subnet, VXLAN or host-gw next hop), so a pod
// needs nothing but its /32 (/128) and a default route to the node; no L2
// domain spans pods, no bridge or proxy-ARP state to keep, and per-pod
// kernel state is one veth with one host route — the same shape the agent's
// tests use.
//
// When node.json does not exist yet (the agent has not leased a subnet),
// ADD and CHECK fail at once with code 11 ("try again later") and STATUS
// with code 50 ("not available"), so the runtime retries instead of
// hanging. DEL and GC work without it: they only need the IPAM store.
//
// Network policy: for a Kubernetes pod (K8S_POD_NAMESPACE and K8S_POD_NAME
// in CNI_ARGS) ADD registers the pod's addresses with the agent
// (agent/podreg) after IPAM and before the veth is wired; when the pod's
// namespace has NetworkPolicies it waits until the agent has the pod's
// policy in the kernel, so the pod's first packet is already filtered, and
// fails with code 11 when the agent is down or too slow (docs/policy.md).
//
// It owns nothing beyond what ptp and host-local own for its attachments.
package podnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/podreg"
	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/ipam/hostlocal"
	"github.com/podnet/podnet/plugins/ptp"
)

const name = "podnet"

// Plugin is the podnet plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet: pods on the node subnet the podnet agent leased (routed veth)",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

// Conf is the podnet plugin configuration.
type Conf struct {
	types.NetConf
	// StateDir holds the agent's node.json (default /run/podnet).
	StateDir string `json:"stateDir,omitempty"`
	// DataDir is host-local's reservation directory: default
	// /var/lib/cni/networks with the default stateDir, <stateDir>/ipam
	// otherwise (each lab node keeps its own).
	DataDir string `json:"dataDir,omitempty"`
	// MTU overrides node.json's MTU when non-zero.
	MTU int `json:"mtu,omitempty"`
}

// Parse decodes and validates stdin and fills in the defaults: what ADD,
// CHECK and STATUS use.
func Parse(stdin []byte) (*Conf, error) { return cniplugin.Validated(Decode(stdin)) }

// Decode reads stdin and fills in the defaults, checking only what DEL and
// GC need to find the attachment's reservation: the name and the two
// directories (docs/del.md).
func Decode(stdin []byte) (*Conf, error) {
	c := &Conf{}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	if c.Name == "" {
		return nil, cnierr.Field(name, "name", "empty: the network needs a name")
	}
	if c.StateDir == "" {
		c.StateDir = nodestate.DefaultDir
	}
	if !filepath.IsAbs(c.StateDir) {
		return nil, cnierr.Field(name, "stateDir", "%q is not an absolute path", c.StateDir)
	}
	c.StateDir = filepath.Clean(c.StateDir)
	if c.DataDir == "" {
		if c.StateDir == nodestate.DefaultDir {
			c.DataDir = hostlocal.DefaultDataDir
		} else {
			c.DataDir = filepath.Join(c.StateDir, "ipam")
		}
	}
	if !filepath.IsAbs(c.DataDir) {
		return nil, cnierr.Field(name, "dataDir", "%q is not an absolute path", c.DataDir)
	}
	return c, nil
}

// Validate makes ADD's checks.
func (c *Conf) Validate() error {
	if c.IPAM.Type != "" {
		return cnierr.Field(name, "ipam", "must not be set: podnet allocates from the subnet the agent leased (%s)", nodestate.FileName)
	}
	switch {
	case c.MTU < 0:
		return cnierr.Field(name, "mtu", "%d is negative", c.MTU)
	case c.MTU > 0 && c.MTU < 576:
		return cnierr.Field(name, "mtu", "%d is below the minimum 576", c.MTU)
	case c.MTU > 65535:
		return cnierr.Field(name, "mtu", "%d is above the maximum 65535", c.MTU)
	}
	return nil
}

// ReadState loads node.json from c.StateDir. A missing file is a code-11
// error ("try again later") naming the file and the agent.
func ReadState(c *Conf) (*nodestate.State, error) {
	st, err := nodestate.Read(c.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, cnierr.New(cnierr.TryAgainLater, name, "%s does not exist yet: the podnet agent has not leased this node's subnet (is it running with --state-dir %s?)", nodestate.Path(c.StateDir), c.StateDir)
	}
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}
	if len(st.Subnets) == 0 || len(st.Gateways) != len(st.Subnets) {
		return nil, cnierr.New(cnierr.TryAgainLater, name, "%s lists %d subnets and %d gateways: wait for the agent to rewrite it", nodestate.Path(c.StateDir), len(st.Subnets), len(st.Gateways))
	}
	return &st, nil
}

// PtpConf turns the podnet config (raw stdin, parsed conf) and the node
// state into the stdin for the ptp plugin. Every key of stdin but type,
// stateDir, dataDir and mtu is passed through unchanged (prevResult,
// runtimeConfig, args, cni.dev/valid-attachments), so each verb sees what
// the runtime sent. st may be nil (DEL, GC without node.json): the IPAM
// section then names only the store.
func PtpConf(stdin []byte, c *Conf, st *nodestate.State) ([]byte, error) {
	m := map[string]any{}
	if err := json.Unmarshal(stdin, &m); err != nil {
		return nil, cnierr.Decode(name, err)
	}
	delete(m, "stateDir")
	delete(m, "dataDir")
	m["type"] = "ptp"
	m["ipMasq"] = false
	ipam := map[string]any{"type": "host-local", "dataDir": c.DataDir}
	if st != nil {
		mtu := st.MTU
		if c.MTU != 0 {
			mtu = c.MTU
		}
		if mtu > 0 {
			m["mtu"] = mtu
		} else {
			delete(m, "mtu")
		}
		var ranges [][]map[string]string
		var routes []map[string]string
		for i, s := range st.Subnets {
			ranges = append(ranges, []map[string]string{{"subnet": s.String(), "gateway": st.Gateways[i].String()}})
			def := "0.0.0.0/0"
			if s.Addr().Is6() {
				def = "::/0"
			}
			routes = append(routes, map[string]string{"dst": def})
		}
		ipam["ranges"] = ranges
		ipam["routes"] = routes
	} else {
		delete(m, "mtu")
	}
	m["ipam"] = ipam
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	return b, nil
}

func withStdin(args *skel.CmdArgs, stdin []byte) *skel.CmdArgs {
	a := *args
	a.StdinData = stdin
	return &a
}

// prepare parses, reads node.json and builds ptp's arguments. For DEL and
// GC (cleanup) the config is only decoded and node.json is optional.
func prepare(args *skel.CmdArgs, cleanup bool) (*skel.CmdArgs, *Conf, error) {
	c, err := Decode(args.StdinData)
	if err == nil && !cleanup {
		err = c.Validate()
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := ReadState(c)
	if err != nil {
		if !cleanup {
			return nil, nil, err
		}
		st = nil
	}
	b, err := PtpConf(args.StdinData, c, st)
	if err != nil {
		return nil, nil, err
	}
	return withStdin(args, b), c, nil
}

func add(args *skel.CmdArgs) (types.Result, error) {
	a, c, err := prepare(args, false)
	if err != nil {
		return nil, err
	}
	ns, pod, ok := podIdentity(args.Args)
	if !ok {
		// Not a Kubernetes pod (podman, cnitool): no policy can select it.
		return ptp.Plugin.Add(a)
	}
	return ptp.AddWith(a, func(res *current.Result) error {
		reg := podreg.Registration{ContainerID: args.ContainerID, IfName: args.IfName, Namespace: ns, Name: pod}
		for _, ipc := range res.IPs {
			if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
				reg.IPs = append(reg.IPs, ip.Unmap())
			}
		}
		return register(c.StateDir, reg)
	})
}

// Bounds of the wait for the agent at ADD.
const (
	// PolicyWait: a pod whose namespace has NetworkPolicies starts only
	// once the agent has its policy in force; past this, ADD fails with
	// code 11 and the runtime retries.
	PolicyWait = 10 * time.Second
	// registerWait: any other pod only tells the agent its addresses
	// (for other pods' peer sets); it never waits longer than this.
	registerWait = 250 * time.Millisecond
)

// register tells the agent about the pod before its interface is wired.
// When the pod's namespace has NetworkPolicies (per the agent's
// policy-namespaces.json; an unreadable file counts as yes) it waits until
// the agent has the pod's policy in the kernel, and fails closed (code 11)
// if the agent is down or does not manage within PolicyWait. Other pods do
// not wait and start even with the agent down: no policy selects them.
func register(stateDir string, reg podreg.Registration) error {
	has, _, err := podreg.HasPolicies(stateDir, reg.Namespace)
	reg.Wait = has || err != nil
	d := registerWait
	if reg.Wait {
		d = PolicyWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	rerr := podreg.Register(ctx, stateDir, reg)
	if rerr == nil || !reg.Wait {
		return nil
	}
	return cnierr.New(cnierr.TryAgainLater, name, "pod %s: namespace %s has NetworkPolicies and the pod's policy is not in force yet, so the pod may not start: %v", reg.Key(), reg.Namespace, rerr)
}

// podIdentity reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS.
func podIdentity(cniArgs string) (namespace, pod string, ok bool) {
	namespace, pod = cniplugin.EnvArg(cniArgs, "K8S_POD_NAMESPACE"), cniplugin.EnvArg(cniArgs, "K8S_POD_NAME")
	return namespace, pod, namespace != "" && pod != ""
}

func check(args *skel.CmdArgs) error {
	a, _, err := prepare(args, false)
	if err != nil {
		return err
	}
	return ptp.Plugin.Check(a)
}

func del(args *skel.CmdArgs) error {
	a, c, err := prepare(args, true)
	if err != nil {
		return err
	}
	if err := ptp.Plugin.Del(a); err != nil {
		return err
	}
	if _, _, ok := podIdentity(args.Args); ok {
		// Best effort: the agent also learns it from the datastore.
		ctx, cancel := context.WithTimeout(context.Background(), registerWait)
		_ = podreg.Unregister(ctx, c.StateDir, args.ContainerID, args.IfName)
		cancel()
	}
	return nil
}

func gc(args *skel.CmdArgs) error {
	a, _, err := prepare(args, true)
	if err != nil {
		return err
	}
	return ptp.Plugin.GC(a)
}

// status is code 50 (not available) until node.json exists, then ptp's
// (host-local's) status.
func status(args *skel.CmdArgs) error {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	st, err := ReadState(c)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) && te.Code == cnierr.TryAgainLater {
			return types.NewError(cnierr.NotAvailable, te.Msg, te.Details)
		}
		return err
	}
	b, err := PtpConf(args.StdinData, c, st)
	if err != nil {
		return err
	}
	return ptp.Plugin.Status(withStdin(args, b))
}
