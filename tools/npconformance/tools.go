//go:build tools

// Package tools pins, for `go mod tidy`, the ClusterNetworkPolicy
// conformance suite of sigs.k8s.io/network-policy-api v0.3.0 that build.sh
// compiles into a test binary (`go test -c
// sigs.k8s.io/network-policy-api/conformance`). That package has only test
// files, so its test-only imports are listed here: without them go.sum lacks
// their checksums and `go test -c` fails ("missing go.sum entry ... go get
// -t"). `podnet-agent lab conformance-cnp` runs the binary against a lab
// cluster (docs/conformance/README.md). Nothing of podnet imports this
// module.
package tools

import (
	_ "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	_ "k8s.io/apimachinery/pkg/util/sets"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	_ "k8s.io/client-go/rest"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "sigs.k8s.io/controller-runtime/pkg/client"
	_ "sigs.k8s.io/controller-runtime/pkg/client/config"
	_ "sigs.k8s.io/network-policy-api/apis/v1beta1"
	_ "sigs.k8s.io/network-policy-api/conformance"
	_ "sigs.k8s.io/network-policy-api/conformance/apis/v1alpha1"
	_ "sigs.k8s.io/network-policy-api/conformance/tests"
	_ "sigs.k8s.io/network-policy-api/conformance/utils/flags"
	_ "sigs.k8s.io/network-policy-api/conformance/utils/suite"
	_ "sigs.k8s.io/yaml"
)
