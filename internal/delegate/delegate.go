// Package delegate runs a plugin's IPAM (or any delegated plugin type):
// in-process when the type is one of podnet's own that registered itself
// (Register; the IPAM packages do at init, so any binary that links them
// runs them in-process), otherwise by exec from CNI_PATH exactly as the
// reference plugins do. It imports no plugin: it is below them. In-process calls receive the
// same stdin and CNI_* values an exec would and return the same result, minus
// a process start and a JSON round trip per ADD and DEL.
package delegate

import (
	"context"
	"os"
	"sync"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cniplugin"
)

// builtin are the delegated types run in-process. Setting
// PODNET_EXEC_IPAM=1 forces exec for all of them (used to measure the
// difference and to test exec compatibility).
var (
	builtinMu sync.RWMutex
	builtin   = map[string]*cniplugin.Plugin{}
)

// Register makes p's type run in-process (called from the init of the
// package that defines p).
func Register(p *cniplugin.Plugin) {
	builtinMu.Lock()
	defer builtinMu.Unlock()
	builtin[p.Type] = p
}

func inProcess(typ string) *cniplugin.Plugin {
	if os.Getenv("PODNET_EXEC_IPAM") == "1" {
		return nil
	}
	builtinMu.RLock()
	defer builtinMu.RUnlock()
	return builtin[typ]
}

// Add runs ADD of typ with args' stdin and returns the result in the current
// spec version.
func Add(ctx context.Context, typ string, args *skel.CmdArgs) (*current.Result, error) {
	var res types.Result
	var err error
	if p := inProcess(typ); p != nil {
		res, err = p.Add(args)
	} else {
		res, err = invoke.DelegateAdd(ctx, typ, args.StdinData, nil)
	}
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Del runs DEL of typ.
func Del(ctx context.Context, typ string, args *skel.CmdArgs) error {
	if p := inProcess(typ); p != nil {
		if p.Del == nil {
			return nil
		}
		return p.Del(args)
	}
	return invoke.DelegateDel(ctx, typ, args.StdinData, nil)
}

// Check runs CHECK of typ.
func Check(ctx context.Context, typ string, args *skel.CmdArgs) error {
	if p := inProcess(typ); p != nil {
		if p.Check == nil {
			return nil
		}
		return p.Check(args)
	}
	return invoke.DelegateCheck(ctx, typ, args.StdinData, nil)
}

// GC runs GC of typ. The stdin carries cni.dev/valid-attachments.
func GC(ctx context.Context, typ string, args *skel.CmdArgs) error {
	if p := inProcess(typ); p != nil {
		if p.GC == nil {
			return nil
		}
		return p.GC(args)
	}
	return invoke.DelegateGC(ctx, typ, args.StdinData, nil)
}

// Status runs STATUS of typ.
func Status(ctx context.Context, typ string, args *skel.CmdArgs) error {
	if p := inProcess(typ); p != nil {
		if p.Status == nil {
			return nil
		}
		return p.Status(args)
	}
	return invoke.DelegateStatus(ctx, typ, args.StdinData, nil)
}
