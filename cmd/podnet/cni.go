package main

import "github.com/spf13/cobra"

func newCNICmd() *cobra.Command {
	return &cobra.Command{Use: "cni", Short: "(being written)"}
}
