package main

import (
	"fmt"
	"testing"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/internal/netlinkx"
)

// reapCmd is the hidden command a bridge or ptp DEL starts, detached, to
// delete the host veth it marked (see netlinkx.StartReleasePodLink): the
// kernel's part of deleting a veth takes tens of milliseconds that the
// runtime need not wait for.
const reapCmd = "reap-links"

func init() {
	// Only the real binary can re-exec itself as a reaper; a test binary
	// of this package would run its tests instead. argv[0] is no plugin
	// type, so main dispatches to the CLI.
	if !testing.Testing() {
		netlinkx.SetReaper("podnet-reaper", reapCmd)
	}
}

func newReapCmd() *cobra.Command {
	var first int
	cmd := &cobra.Command{
		Use:    reapCmd,
		Short:  "delete the links a DEL marked for reaping in the current network namespace",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := netlinkx.NewHandle()
			if err != nil {
				return err
			}
			defer h.Close()
			n, err := netlinkx.RunReaper(h, first)
			if err != nil {
				return err
			}
			if v, _ := cmd.Flags().GetBool("verbose"); v {
				fmt.Fprintf(cmd.OutOrStdout(), "reaped %d links\n", n)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&first, "first", 0, "index of the link to delete before the others")
	cmd.Flags().BoolP("verbose", "v", false, "print how many links were deleted")
	return cmd
}
