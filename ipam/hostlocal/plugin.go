// Package hostlocal is a placeholder being written; see the issue tracker.
package hostlocal

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cniplugin"
)

// Plugin is the hostlocal IPAM plugin.
var Plugin = &cniplugin.Plugin{
	Type: "host-local",
	Add: func(args *skel.CmdArgs) (types.Result, error) {
		return nil, cniplugin.Errorf("hostlocal", "not implemented yet")
	},
}
