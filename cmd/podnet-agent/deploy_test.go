package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/podnet/podnet/deploy"
)

// The DaemonSet's command line, with the ConfigMap's values expanded as the
// kubelet does, is accepted by the real agent command: every flag exists,
// parses and validates; it gets as far as connecting to the apiserver
// (in-cluster config, which a test is not in).
func TestDeployManifestArgs(t *testing.T) {
	objs, err := deploy.Decode(deploy.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	o, err := deploy.Find(objs)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []map[string]string{
		nil, // as shipped
		{"cluster-cidr": "10.244.0.0/16,fd00:244::/48", "backend": "auto", "mtu": "1400", "underlay": "10.0.0.0/8", "network-policy": "false", "log-level": "debug"},
	} {
		cm := o.ConfigMap.DeepCopy()
		for k, v := range cfg {
			cm.Data[k] = v
		}
		args, err := deploy.ExpandArgs(o.DaemonSet.Spec.Template.Spec.Containers[0], cm, map[string]string{"spec.nodeName": "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(args) < 2 || args[0] != "/usr/local/bin/podnet-agent" || args[1] != "agent" {
			t.Fatalf("command %q: want /usr/local/bin/podnet-agent agent ...", args)
		}
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		t.Setenv("KUBERNETES_SERVICE_PORT", "")
		cmd := newAgentCmd()
		cmd.SetArgs(args[2:])
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err = cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not running in a pod") {
			t.Fatalf("args %q (config %v): %v; want only the in-cluster connection to fail", args[2:], cfg, err)
		}
	}
}
