// Package cniplugin adapts podnet's plugins to the CNI spec framework from
// github.com/containernetworking/cni (skel, types, version): one Plugin value
// per CNI type, whose ADD returns a result value that this package converts
// to the version the runtime asked for. Returning values rather than printing
// lets a plugin call another of podnet's plugins in-process (see package
// delegate) with the same semantics as an exec.
//
// It also holds the config decoding shared by every plugin: the common
// network config fields, prevResult parsing and JSON errors that name fields.
package cniplugin

import (
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/trace"
)

// Versions are the spec versions every podnet plugin accepts. Results are
// produced in 1.x form and converted down; 0.1.0/0.2.0 work where the result
// converts (at most one address per family).
var Versions = version.PluginSupports("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin is one CNI plugin type. Add is required; a nil Check, Del, GC or
// Status means the verb has nothing to do for this plugin and succeeds.
type Plugin struct {
	Type  string
	About string

	Add    func(args *skel.CmdArgs) (types.Result, error)
	Check  func(args *skel.CmdArgs) error
	Del    func(args *skel.CmdArgs) error
	GC     func(args *skel.CmdArgs) error
	Status func(args *skel.CmdArgs) error
}

// Main runs the plugin for the current process (environment + stdin) and
// returns the CNI error to print, or nil. The spec library decodes stdin
// before any callback runs; its error for a config nested too deep (Go's
// "invalid character '[' exceeded max depth") is reworded here as
// Decode's is.
func (p *Plugin) Main() *types.Error {
	unsetOwnNetnsForDel()
	skelStart = trace.Begin()
	return p.reword(skel.PluginMainFuncsWithError(p.Funcs(), Versions, p.About))
}

// skelStart is when Main handed over to the spec library (traced: the
// library reads the environment and stdin and checks versions before it
// calls a verb).
var skelStart time.Time

// reword replaces the spec library's decoding error for input nested
// deeper than encoding/json allows by cnierr.TooDeep.
func (p *Plugin) reword(e *types.Error) *types.Error {
	if e != nil && e.Code == cnierr.DecodingFailure && cnierr.IsTooDeep(e.Msg) {
		return cnierr.TooDeep(p.Type, e.Msg)
	}
	return e
}

// Funcs returns the skel callbacks: ADD prints its result in the config's
// cniVersion. ADD, CHECK and DEL go through CmdAdd, CmdCheck and CmdDel
// (the CNI_NETNS check, see netns.go).
func (p *Plugin) Funcs() skel.CNIFuncs {
	orNop := func(f func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
		if f == nil {
			return func(*skel.CmdArgs) error { return nil }
		}
		return f
	}
	return skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			trace.End("skel: env, stdin", skelStart)
			res, err := p.CmdAdd(args)
			if err != nil {
				return err
			}
			defer trace.Span("result print")()
			ver, err := ConfVersion(args.StdinData)
			if err != nil {
				return err
			}
			return types.PrintResult(res, ver)
		},
		Check: p.CmdCheck,
		Del: func(args *skel.CmdArgs) error {
			trace.End("skel: env, stdin", skelStart)
			return p.CmdDel(args)
		},
		GC:     orNop(p.GC),
		Status: orNop(p.Status),
	}
}

// ConfVersion returns the config's cniVersion ("0.1.0" when absent, as the
// spec's library does).
func ConfVersion(stdin []byte) (string, error) {
	v, err := (&version.ConfigDecoder{}).Decode(stdin)
	if err != nil {
		return "", types.NewError(cnierr.DecodingFailure, err.Error(), "")
	}
	return v, nil
}

// Decode unmarshals stdin into conf and turns JSON errors into code-6 errors
// that name the field. conf is typically a struct embedding types.NetConf.
func Decode(plugin string, stdin []byte, conf any) error {
	if err := json.Unmarshal(stdin, conf); err != nil {
		return cnierr.Decode(plugin, err)
	}
	return nil
}

// PrevResult converts the parsed prevResult of conf (if any) to the current
// result type. It returns nil, nil when there is none. It may be called
// more than once on the same conf: version.ParsePrevResult consumes
// RawPrevResult, so a second call converts the already parsed PrevResult
// (it used to report "no prevResult").
func PrevResult(plugin string, conf *types.NetConf) (*current.Result, error) {
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(conf); err != nil {
			return nil, cnierr.New(cnierr.DecodingFailure, plugin, "field \"prevResult\": %v", err)
		}
	}
	if conf.PrevResult == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, cnierr.New(cnierr.DecodingFailure, plugin, "field \"prevResult\": cannot convert to %s: %v", current.ImplementedSpecVersion, err)
	}
	if err := checkPrevResult(plugin, res); err != nil {
		return nil, err
	}
	return res, nil
}

// checkPrevResult refuses addresses and route destinations the spec's
// library decodes to an empty net.IPNet (an old-version "ip4": {} does):
// passed through, they would print as "<nil>" in this plugin's own result,
// which no runtime can parse.
func checkPrevResult(plugin string, res *current.Result) error {
	bad := func(n net.IPNet) bool {
		if n.IP == nil || n.Mask == nil {
			return true
		}
		_, _, err := net.ParseCIDR(n.String())
		return err != nil
	}
	for i, ip := range res.IPs {
		if ip == nil || bad(ip.Address) {
			return cnierr.New(cnierr.DecodingFailure, plugin, "field \"prevResult.ips[%d].address\": missing or not an address/prefix-length", i)
		}
	}
	for i, r := range res.Routes {
		if r == nil || bad(r.Dst) {
			return cnierr.New(cnierr.DecodingFailure, plugin, "field \"prevResult.routes[%d].dst\": missing or not in CIDR notation", i)
		}
	}
	return nil
}

// RequirePrevResult is PrevResult for chained plugins that cannot work
// without one.
func RequirePrevResult(plugin string, conf *types.NetConf) (*current.Result, error) {
	res, err := PrevResult(plugin, conf)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, cnierr.Field(plugin, "prevResult", "required: %s must be chained after a plugin that returns a result", plugin)
	}
	return res, nil
}

// EmptyResult is the result for a plugin with nothing to report.
func EmptyResult() *current.Result {
	return &current.Result{CNIVersion: current.ImplementedSpecVersion}
}

// Errorf builds an internal (code 999) error prefixed with the plugin type.
func Errorf(plugin, format string, a ...any) error {
	return types.NewError(cnierr.Internal, plugin+": "+fmt.Sprintf(format, a...), "")
}
