package deploy

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
)

// A real kube-apiserver (v1.34, admission and validation on) accepts every
// object of the manifest, as `kubectl apply` sends them. Skips without the
// binary (tools/kubernetes/build.sh).
func TestManifestAcceptedByAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	cli, err := srv.Client(kubetest.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(Manifest)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The CRD first, as docs/kubernetes.md says (kube-apiserver v1.34 takes
	// its schema and CEL rules).
	if err := srv.InstallCRDs(ctx, CRDs); err != nil {
		t.Fatal(err)
	}
	c := metav1.CreateOptions{FieldValidation: "Strict"}
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = cli.CoreV1().Namespaces().Create(ctx, o, c)
		case *corev1.ServiceAccount:
			_, err = cli.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, c)
		case *rbacv1.ClusterRole:
			_, err = cli.RbacV1().ClusterRoles().Create(ctx, o, c)
		case *rbacv1.ClusterRoleBinding:
			_, err = cli.RbacV1().ClusterRoleBindings().Create(ctx, o, c)
		case *corev1.ConfigMap:
			_, err = cli.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, c)
		case *appsv1.DaemonSet:
			_, err = cli.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, c)
		default:
			err = fmt.Errorf("no create for %T", o)
		}
		if err != nil {
			t.Fatalf("%T: %v", obj, err)
		}
	}
	// The binding reaches the DaemonSet's ServiceAccount: what the agent
	// calls is allowed, anything else denied.
	sa := "system:serviceaccount:" + Namespace + ":podnet-agent"
	for _, tc := range []struct {
		group, resource, sub, verb string
		allowed                    bool
	}{
		{"", "nodes", "", "watch", true},
		{"", "nodes", "", "patch", true},
		{"", "nodes", "status", "patch", true},
		{"", "pods", "", "list", true},
		{"networking.k8s.io", "networkpolicies", "", "watch", true},
		{"policy.networking.k8s.io", "clusternetworkpolicies", "", "list", true},
		{"policy.networking.k8s.io", "clusternetworkpolicies", "", "watch", true},
		{"policy.networking.k8s.io", "clusternetworkpolicies", "status", "patch", false},
		{"", "nodes", "", "get", false},
		{"", "nodes", "", "delete", false},
		{"", "pods", "status", "patch", false},
		{"", "secrets", "", "list", false},
	} {
		r, err := cli.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Group: tc.group, Resource: tc.resource, Subresource: tc.sub, Verb: tc.verb},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != tc.allowed {
			t.Errorf("%s %s/%s (%s): allowed %v, want %v", tc.verb, tc.resource, tc.sub, tc.group, r.Status.Allowed, tc.allowed)
		}
	}
}
