package main

import (
	"errors"
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

// installPlugins makes DIR/<type> -> podnet for every plugin. An existing
// file of that name is replaced atomically (link to a temp name, rename), so
// a runtime calling the plugin mid-install sees either the old or the new one.
func installPlugins(cmd *cobra.Command, dir string, copyBin bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	target := self
	if copyBin {
		target = filepath.Join(dir, "podnet")
		if err := copyFile(self, target); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "copied %s -> %s\n", self, target)
	}
	var errs []error
	for _, p := range all.Plugins() {
		link := filepath.Join(dir, p.Type)
		tmp := link + ".podnet-tmp"
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(cmd.OutOrStdout(), "installed %s -> %s\n", link, target)
	}
	return errors.Join(errs...)
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
