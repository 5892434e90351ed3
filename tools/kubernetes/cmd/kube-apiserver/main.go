// Command kube-apiserver is the upstream Kubernetes API server
// (k8s.io/kubernetes/cmd/kube-apiserver/app, v1.34.4), built from its own
// module so podnet's tests can run a real apiserver without a Kubernetes
// release download. It is a test tool: podnet's binaries never import it.
//
// Build: tools/kube-apiserver/build.sh (caches the binary under
// /var/cache/podnet-test).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
