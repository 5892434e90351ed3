package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/spf13/cobra"

	"github.com/podnet/podnet/internal/cniclient"
)

// cniFlags are the options of `podnet cni`, with cnitool's environment
// variables as defaults.
type cniFlags struct {
	confDir   string
	cniPath   string
	cacheDir  string
	cid       string
	ifname    string
	args      string
	capArgs   string
	valid     []string
	nodeNetns string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// cniVerb is one `podnet cni` subcommand.
type cniVerb func(ctx context.Context, cmd *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, a cniclient.Attachment) error

func newCNICmd() *cobra.Command {
	f := &cniFlags{}
	cmd := &cobra.Command{
		Use:   "cni",
		Short: "act as a CNI runtime, like cnitool: add|check|del|gc|status NETWORK NETNS",
		Long: `Run a network configuration list against a network namespace through libcni,
as a container runtime (or cnitool) would. NETWORK is the "name" of a
configuration in --conf-dir; NETNS is a path or a name under /run/netns.

The container ID defaults to cnitool's ("cnitool-" + hex of the first 10
bytes of SHA-512 of the netns path), so cnitool and podnet cni can check or
delete each other's attachments when they share the cache directory.
On a plugin error the CNI error (code, message, details) is printed and the
exit status is non-zero.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.confDir, "conf-dir", envOr(cniclient.EnvNetConfPath, cniclient.DefaultConfDir), "directory of network configuration lists (env "+cniclient.EnvNetConfPath+")")
	pf.StringVar(&f.cniPath, "cni-path", envOr(cniclient.EnvCNIPath, cniclient.DefaultCNIPath), "plugin directories, ':'-separated (env "+cniclient.EnvCNIPath+")")
	pf.StringVar(&f.cacheDir, "cache-dir", "", "libcni result cache directory (default "+libcni.CacheDir+")")
	pf.StringVar(&f.cid, "container-id", "", "container ID (default: cnitool's, derived from the netns path)")
	pf.StringVarP(&f.ifname, "ifname", "i", envOr(cniclient.EnvIfName, cniclient.DefaultIfName), "interface name in the netns (env "+cniclient.EnvIfName+")")
	pf.StringVar(&f.args, "args", os.Getenv(cniclient.EnvCNIArgs), "CNI_ARGS: KEY=VALUE;... (env "+cniclient.EnvCNIArgs+")")
	pf.StringVar(&f.capArgs, "capability-args", os.Getenv(cniclient.EnvCapabilityArgs), "capability arguments (runtimeConfig) as a JSON object (env "+cniclient.EnvCapabilityArgs+")")
	pf.StringVar(&f.nodeNetns, "node-netns", "", "start the plugins inside this network namespace (path or name) instead of the current one")

	verb := func(use, short string, args cobra.PositionalArgs, run cniVerb) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  args,
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, list, att, err := f.setup(args)
				if err != nil {
					return err
				}
				return cniError(run(cmd.Context(), cmd, cl, list, att))
			},
		}
	}

	add := verb("add NETWORK NETNS", "ADD: attach NETNS to NETWORK and print the result", cobra.ExactArgs(2),
		func(ctx context.Context, cmd *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, a cniclient.Attachment) error {
			res, err := cl.Add(ctx, list, a)
			if err != nil {
				return err
			}
			if res == nil {
				return nil
			}
			if err := res.PrintTo(cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		})
	check := verb("check NETWORK NETNS", "CHECK: verify the attachment against the cached ADD result", cobra.ExactArgs(2),
		func(ctx context.Context, _ *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, a cniclient.Attachment) error {
			return cl.Check(ctx, list, a)
		})
	del := verb("del NETWORK NETNS", "DEL: detach NETNS from NETWORK (NETNS may already be gone)", cobra.ExactArgs(2),
		func(ctx context.Context, _ *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, a cniclient.Attachment) error {
			return cl.Del(ctx, list, a)
		})
	gc := verb("gc NETWORK [NETNS]", "GC: delete cached attachments not in --valid, then GC every plugin with the valid list", cobra.RangeArgs(1, 2),
		func(ctx context.Context, _ *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, _ cniclient.Attachment) error {
			valid := []types.GCAttachment{}
			for _, s := range f.valid {
				a, err := cniclient.ParseAttachment(s)
				if err != nil {
					return err
				}
				valid = append(valid, a)
			}
			return cl.GC(ctx, list, valid)
		})
	gc.Flags().StringArrayVar(&f.valid, "valid", nil, "an attachment to keep, CONTAINERID:IFNAME (repeatable; default: none is valid)")
	status := verb("status NETWORK [NETNS]", "STATUS: print ok if every plugin is ready for ADDs, else the error", cobra.RangeArgs(1, 2),
		func(ctx context.Context, cmd *cobra.Command, cl *cniclient.Client, list *libcni.NetworkConfigList, _ cniclient.Attachment) error {
			if err := cl.Status(ctx, list); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		})
	cmd.AddCommand(add, check, del, gc, status)
	return cmd
}

// setup builds the client, loads the network list and the attachment from
// the positional arguments (NETWORK [NETNS]) and the flags.
func (f *cniFlags) setup(args []string) (*cniclient.Client, *libcni.NetworkConfigList, cniclient.Attachment, error) {
	var att cniclient.Attachment
	nodeNS, err := cniclient.ResolveNetns(f.nodeNetns)
	if err != nil {
		return nil, nil, att, err
	}
	cl := cniclient.New(cniclient.Config{
		ConfDir:   f.confDir,
		Path:      filepath.SplitList(f.cniPath),
		CacheDir:  f.cacheDir,
		NodeNetns: nodeNS,
	})
	list, err := cl.Load(args[0])
	if err != nil {
		return nil, nil, att, err
	}
	if len(args) > 1 {
		if att.NetNS, err = cniclient.ResolveNetns(args[1]); err != nil {
			return nil, nil, att, err
		}
	}
	if att.Args, err = cniclient.ParseArgs(f.args); err != nil {
		return nil, nil, att, err
	}
	if att.CapabilityArgs, err = cniclient.ParseCapabilityArgs(f.capArgs); err != nil {
		return nil, nil, att, err
	}
	att.IfName = f.ifname
	att.ContainerID = f.cid
	if att.ContainerID == "" {
		att.ContainerID = cniclient.DefaultContainerID(att.NetNS)
	}
	return cl, list, att, nil
}

// cniError adds the CNI error code of a failing plugin to libcni's message
// (which already names the plugin type and verb).
func cniError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return fmt.Errorf("%w [CNI error code %d]", err, te.Code)
	}
	return err
}
