package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/lab"
)

// labObjectCmds are the lab's Kubernetes-object commands: pod add/del,
// label, apply, delete (docs/lab.md).
func labObjectCmds(name, root *string) []*cobra.Command {
	var node, labels, ports string
	add := &cobra.Command{
		Use:   "add NS/NAME --node NODE [--labels k=v,...] [--ports name=tcp/80,...]",
		Short: "create a pod: its Pod object in etcd, then its netns wired through the CNI plugins on NODE",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ns, pod, err := lab.SplitRef(args[0])
			if err != nil {
				return err
			}
			if node == "" {
				return fmt.Errorf("--node is required")
			}
			spec := lab.PodSpec{Namespace: ns, Name: pod, Node: node}
			if spec.Labels, err = lab.ParseLabels(labels); err != nil {
				return err
			}
			if spec.Ports, err = lab.ParsePorts(ports); err != nil {
				return err
			}
			p, err := lab.AddPod(c.Context(), *root, *name, spec)
			if err != nil {
				return err
			}
			fmt.Printf("pod %s/%s: netns %s on node %s, %v\n", p.Namespace, p.Name, p.Netns, p.Node, p.IPs)
			return nil
		},
	}
	add.Flags().StringVar(&node, "node", "", "the node (n1, n2, ...)")
	add.Flags().StringVar(&labels, "labels", "", "pod labels: k=v,k2=v2")
	add.Flags().StringVar(&ports, "ports", "", "named container ports: name=tcp/80,name2=udp/53")

	del := &cobra.Command{
		Use:   "del NS/NAME",
		Short: "delete a pod: CNI DEL, its netns, its Pod object",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ns, pod, err := lab.SplitRef(args[0])
			if err != nil {
				return err
			}
			if err := lab.DelPod(c.Context(), *root, *name, ns, pod); err != nil {
				return err
			}
			fmt.Printf("pod %s/%s deleted\n", ns, pod)
			return nil
		},
	}
	pod := &cobra.Command{Use: "pod", Short: "add or delete pods with Kubernetes Pod objects (for network policy)"}
	pod.AddCommand(add, del)

	labelCmd := func(use, kind string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " k=v ... [k-]",
			Short: "set (k=v) or remove (k-) labels of a " + strings.ToLower(kind) + " object",
			Args:  cobra.MinimumNArgs(2),
			RunE: func(c *cobra.Command, args []string) error {
				change, err := lab.ParseLabelArgs(args[1:])
				if err != nil {
					return err
				}
				if err := lab.Label(c.Context(), *root, *name, kind, args[0], change); err != nil {
					return err
				}
				fmt.Printf("%s/%s labeled\n", strings.ToLower(kind), args[0])
				return nil
			},
		}
	}
	label := &cobra.Command{Use: "label", Short: "change the labels of a pod or namespace object"}
	label.AddCommand(labelCmd("pod NS/NAME", etcd.KindPod), labelCmd("namespace NS", etcd.KindNamespace))

	fileCmd := func(use, short string, run func(*lab.Lab, *cobra.Command, io.Reader) error) *cobra.Command {
		var file string
		c := &cobra.Command{
			Use:   use + " -f FILE",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if file == "" {
					return fmt.Errorf("-f FILE is required (- for stdin)")
				}
				l, err := lab.Load(*root, *name)
				if err != nil {
					return err
				}
				r := io.Reader(os.Stdin)
				if file != "-" {
					f, err := os.Open(file)
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
				}
				return run(l, c, r)
			},
		}
		c.Flags().StringVarP(&file, "filename", "f", "", "YAML (multi-document) or JSON file of Namespaces and NetworkPolicies; - for stdin")
		return c
	}
	apply := fileCmd("apply", "create or replace Namespace and NetworkPolicy objects", func(l *lab.Lab, c *cobra.Command, r io.Reader) error {
		return l.Apply(c.Context(), r, os.Stdout)
	})
	deleteCmd := fileCmd("delete", "delete Namespace and NetworkPolicy objects", func(l *lab.Lab, c *cobra.Command, r io.Reader) error {
		return l.Delete(c.Context(), r, os.Stdout)
	})
	return []*cobra.Command{pod, label, apply, deleteCmd}
}
