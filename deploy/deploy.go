// Package deploy owns podnet's Kubernetes manifest, podnet.yaml (embedded as
// Manifest): the namespace, RBAC, ConfigMap and DaemonSet a cluster admin
// applies with `kubectl apply -f deploy/podnet.yaml`, after the
// ClusterNetworkPolicy CRD (clusternetworkpolicies.yaml, embedded as CRDs). Decode reads it with
// client-go's scheme, strictly; Render gives a copy with another image or
// other ConfigMap values (what `podnet lab up --kubernetes` applies), so no
// one edits the YAML by text substitution. docs/kubernetes.md explains it.
package deploy

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Manifest is deploy/podnet.yaml.
//
//go:embed podnet.yaml
var Manifest []byte

// CRDs is deploy/clusternetworkpolicies.yaml: the ClusterNetworkPolicy
// CRD (sigs.k8s.io/network-policy-api v0.3.0, standard channel, copied
// verbatim), applied before Manifest with `kubectl apply --server-side`
// (large: a client-side apply would keep a 68 KB copy in its
// last-applied annotation). The agent reads ClusterNetworkPolicies when it
// is installed.
//
//go:embed clusternetworkpolicies.yaml
var CRDs []byte

// CRDNames are the names of the CustomResourceDefinitions in CRDs.
var CRDNames = []string{"clusternetworkpolicies.policy.networking.k8s.io"}

// Names in the manifest.
const (
	Namespace     = "podnet-system"
	ConfigMapName = "podnet-config"
	DaemonSetName = "podnet"
	// MetricsPort serves /metrics, /healthz and /readyz on every node.
	MetricsPort = 9490
)

// documents splits a multi-document YAML stream, dropping empty documents
// (comments only).
func documents(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		if len(m) > 0 {
			docs = append(docs, d)
		}
	}
}

// Decode decodes every document of a manifest into client-go's typed
// objects, strictly: an unknown or duplicate field is an error.
func Decode(data []byte) ([]runtime.Object, error) {
	docs, err := documents(data)
	if err != nil {
		return nil, err
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	objs := make([]runtime.Object, 0, len(docs))
	for i, d := range docs {
		obj, _, err := dec.Decode(d, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// Options change the manifest for Render. Zero values keep the manifest's.
type Options struct {
	// Image replaces the image of every container and init container,
	// e.g. "ghcr.io/podnet/podnet:v0.3.0-12-gabcdef0".
	Image string
	// Config sets keys of the podnet-config ConfigMap ("cluster-cidr",
	// "backend", "mtu", ...); a key the manifest lacks is an error (the
	// DaemonSet would not read it).
	Config map[string]string
}

// Render returns Manifest with o applied, as YAML documents (comments
// dropped), checked by Decode.
func Render(o Options) ([]byte, error) {
	docs, err := documents(Manifest)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	seenCM := false
	for _, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			return nil, err
		}
		meta, _ := m["metadata"].(map[string]any)
		switch {
		case m["kind"] == "ConfigMap" && meta["name"] == ConfigMapName:
			seenCM = true
			data, _ := m["data"].(map[string]any)
			for k, v := range o.Config {
				if _, ok := data[k]; !ok {
					keys := make([]string, 0, len(data))
					for k := range data {
						keys = append(keys, k)
					}
					slices.Sort(keys)
					return nil, fmt.Errorf("deploy: ConfigMap %s has no key %q (keys: %v)", ConfigMapName, k, keys)
				}
				data[k] = v
			}
		case m["kind"] == "DaemonSet" && o.Image != "":
			spec, _ := m["spec"].(map[string]any)
			tmpl, _ := spec["template"].(map[string]any)
			pod, _ := tmpl["spec"].(map[string]any)
			for _, field := range []string{"initContainers", "containers"} {
				cs, _ := pod[field].([]any)
				for _, c := range cs {
					if c, ok := c.(map[string]any); ok {
						c["image"] = o.Image
					}
				}
			}
		}
		b, err := yaml.Marshal(m)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	if len(o.Config) > 0 && !seenCM {
		return nil, fmt.Errorf("deploy: no ConfigMap %s in the manifest", ConfigMapName)
	}
	if _, err := Decode(out.Bytes()); err != nil {
		return nil, fmt.Errorf("deploy: rendered manifest: %w", err)
	}
	return out.Bytes(), nil
}
