// Package static is a placeholder being written; see the issue tracker.
package static

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cniplugin"
)

// Plugin is the static IPAM plugin.
var Plugin = &cniplugin.Plugin{
	Type: "static",
	Add: func(args *skel.CmdArgs) (types.Result, error) {
		return nil, cniplugin.Errorf("static", "not implemented yet")
	},
}
