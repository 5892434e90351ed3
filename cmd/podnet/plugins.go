package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/plugins/all"
)

func newPluginsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "list or install the CNI plugins this binary provides"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "print every plugin type",
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, p := range all.Plugins() {
				fmt.Fprintln(cmd.OutOrStdout(), p.Type)
			}
			return nil
		},
	})
	var dir string
	var copyBin bool
	install := &cobra.Command{
		Use:   "install",
		Short: "create a link named for each plugin type in --dir pointing at this binary",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return installPlugins(cmd, dir, copyBin)
		},
	}
	install.Flags().StringVar(&dir, "dir", "/opt/cni/bin", "directory to install the plugin links into")
	install.Flags().BoolVar(&copyBin, "copy", false, "copy this binary into --dir as podnet first (atomically) and link to that copy with relative links (target \"podnet\"), which resolve wherever --dir is mounted")
	cmd.AddCommand(install)
	return cmd
}

func installPlugins(cmd *cobra.Command, dir string, copyBin bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return err
	}
	target := self
	if copyBin {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		dst := filepath.Join(dir, "podnet")
		if err := copyFile(self, dst); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "copied %s -> %s\n", self, dst)
		// Relative: an init container sees the host's /opt/cni/bin as
		// /host/opt/cni/bin; "podnet" resolves next to the link on both.
		target = "podnet"
	}
	links, err := all.Install(dir, target)
	for _, l := range links {
		fmt.Fprintf(cmd.OutOrStdout(), "installed %s -> %s\n", l, target)
	}
	return err
}

// copyFile copies src to dst atomically: a temp file in dst's directory,
// written, synced and made 0755, then renamed over dst. A runtime exec'ing
// dst meanwhile runs the old or the new binary, never a half-written one
// (and writing over a running binary in place would fail with ETXTBSY).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".podnet-tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := io.Copy(f, in)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o755)
	}
	if werr == nil {
		werr = os.Rename(tmp, dst)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy %s to %s: %w", src, dst, werr)
	}
	return nil
}
