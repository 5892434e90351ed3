//go:build tools

// Package tools pins, for `go mod tidy`, the upstream Kubernetes v1.34.4
// commands and test images that build.sh builds from this module: podnet's
// lab runs a real cluster (`podnet lab up --kubernetes`) from them. Nothing
// of podnet imports this module.
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
