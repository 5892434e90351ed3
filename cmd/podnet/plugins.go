package main

import (
	"fmt"
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
	install.Flags().BoolVar(&copyBin, "copy", false, "copy this binary into --dir as podnet first and link to that copy")
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
		target = filepath.Join(dir, "podnet")
		if err := copyFile(self, target); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "copied %s -> %s\n", self, target)
	}
	links, err := all.Install(dir, target)
	for _, l := range links {
		fmt.Fprintf(cmd.OutOrStdout(), "installed %s -> %s\n", l, target)
	}
	return err
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".podnet-tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
