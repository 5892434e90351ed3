// Package all lists every plugin type the podnet binary answers to. The
// multi-call binary dispatches on argv[0] through ByType, and
// `podnet plugins install` links each Type.
package all

import (
	"sort"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/ipam/hostlocal"
	"github.com/podnet/podnet/ipam/static"
	"github.com/podnet/podnet/plugins/bandwidth"
	"github.com/podnet/podnet/plugins/bridge"
	"github.com/podnet/podnet/plugins/firewall"
	"github.com/podnet/podnet/plugins/hostdevice"
	"github.com/podnet/podnet/plugins/loopback"
	"github.com/podnet/podnet/plugins/macvlan"
	"github.com/podnet/podnet/plugins/podnet"
	"github.com/podnet/podnet/plugins/portmap"
	"github.com/podnet/podnet/plugins/ptp"
	"github.com/podnet/podnet/plugins/sbr"
	"github.com/podnet/podnet/plugins/tap"
	"github.com/podnet/podnet/plugins/tuning"
)

// Plugins returns all plugins, sorted by type.
func Plugins() []*cniplugin.Plugin {
	ps := []*cniplugin.Plugin{
		loopback.Plugin,
		bandwidth.Plugin,
		bridge.Plugin,
		ptp.Plugin,
		macvlan.Plugin,
		tap.Plugin,
		hostdevice.Plugin,
		hostlocal.Plugin,
		static.Plugin,
		tuning.Plugin,
		sbr.Plugin,
		firewall.Plugin,
		portmap.Plugin,
		podnet.Plugin,
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Type < ps[j].Type })
	return ps
}

// ByType returns the plugin named typ, or nil.
func ByType(typ string) *cniplugin.Plugin {
	for _, p := range Plugins() {
		if p.Type == typ {
			return p
		}
	}
	return nil
}
