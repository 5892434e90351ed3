package deploy

import (
	"fmt"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Objects is a decoded manifest's podnet objects.
type Objects struct {
	ConfigMap *corev1.ConfigMap
	DaemonSet *appsv1.DaemonSet
}

// Find picks the ConfigMap and DaemonSet out of decoded objects.
func Find(objs []runtime.Object) (Objects, error) {
	var o Objects
	for _, obj := range objs {
		switch v := obj.(type) {
		case *corev1.ConfigMap:
			if v.Name == ConfigMapName {
				o.ConfigMap = v
			}
		case *appsv1.DaemonSet:
			if v.Name == DaemonSetName {
				o.DaemonSet = v
			}
		}
	}
	if o.ConfigMap == nil || o.DaemonSet == nil {
		return o, fmt.Errorf("deploy: manifest lacks ConfigMap %s or DaemonSet %s", ConfigMapName, DaemonSetName)
	}
	return o, nil
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// ExpandArgs is c's command and args as the kubelet runs them: each $(VAR)
// replaced by the container's env var VAR, whose value is a literal, a key
// of cm (configMapKeyRef) or fields[fieldPath] (fieldRef, e.g.
// "spec.nodeName"). Unlike the kubelet, which leaves an unknown reference
// as it is, an unresolvable one is an error: in this manifest it is a typo.
func ExpandArgs(c corev1.Container, cm *corev1.ConfigMap, fields map[string]string) ([]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = varRef.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := env[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			})
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			if cm == nil || r.Name != cm.Name {
				return nil, fmt.Errorf("env %s: ConfigMap %q is not the manifest's", e.Name, r.Name)
			}
			v, ok := cm.Data[r.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %s has no key %q", e.Name, cm.Name, r.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("env %s: no value for field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		default:
			return nil, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
	}
	var out []string
	var errs []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		out = append(out, varRef.ReplaceAllStringFunc(a, func(m string) string {
			v, ok := env[m[2:len(m)-1]]
			if !ok {
				errs = append(errs, m)
			}
			return v
		}))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("container %s: undefined %v in its command or args", c.Name, errs)
	}
	return out, nil
}
