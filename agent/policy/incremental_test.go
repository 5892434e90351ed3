package policy

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// mutate changes m a little, as a watch event would: objects are
// replaced, never changed in place.
func mutate(r *rand.Rand, m Model) Model {
	m.Pods = slices.Clone(m.Pods)
	m.Policies = slices.Clone(m.Policies)
	m.ClusterPolicies = slices.Clone(m.ClusterPolicies)
	other := genModel(r)
	switch r.IntN(12) {
	case 0: // a pod's labels
		if len(m.Pods) > 0 {
			i := r.IntN(len(m.Pods))
			m.Pods[i].Labels = genLabels(r)
		}
	case 1: // a pod goes
		if len(m.Pods) > 0 {
			m.Pods = slices.Delete(m.Pods, 0, 1)
		}
	case 2: // a pod comes
		if len(other.Pods) > 0 {
			p := other.Pods[0]
			p.Name += "-new"
			m.Pods = append(m.Pods, p)
		}
	case 3: // a pod's addresses or ports
		if len(m.Pods) > 0 && len(other.Pods) > 0 {
			i := r.IntN(len(m.Pods))
			m.Pods[i].IPs, m.Pods[i].Ports = other.Pods[0].IPs, other.Pods[0].Ports
		}
	case 4: // a namespace's labels
		nss := map[string]map[string]string{}
		for k, v := range m.Namespaces {
			nss[k] = v
		}
		nss[genNamespaces[r.IntN(2)]] = genLabels(r)
		m.Namespaces = nss
	case 5: // a policy replaced
		if len(m.Policies) > 0 && len(other.Policies) > 0 {
			i := r.IntN(len(m.Policies))
			np := other.Policies[0].DeepCopy()
			np.Namespace, np.Name = m.Policies[i].Namespace, m.Policies[i].Name
			m.Policies[i] = np
		}
	case 6: // a policy goes
		if len(m.Policies) > 0 {
			m.Policies = slices.Delete(m.Policies, 0, 1)
		}
	case 7: // a policy comes
		if len(other.Policies) > 0 {
			np := other.Policies[0].DeepCopy()
			np.Name += "-new"
			m.Policies = append(m.Policies, np)
		}
	case 8: // a cluster policy replaced
		if len(m.ClusterPolicies) > 0 && len(other.ClusterPolicies) > 0 {
			i := r.IntN(len(m.ClusterPolicies))
			p := other.ClusterPolicies[0].DeepCopy()
			p.Name = m.ClusterPolicies[i].Name
			m.ClusterPolicies[i] = p
		}
	case 9: // a cluster policy goes
		if len(m.ClusterPolicies) > 0 {
			m.ClusterPolicies = slices.Delete(m.ClusterPolicies, 0, 1)
		}
	case 10: // a cluster policy comes
		if len(other.ClusterPolicies) > 0 {
			p := other.ClusterPolicies[0].DeepCopy()
			p.Name += "-new"
			m.ClusterPolicies = append(m.ClusterPolicies, p)
		}
	default: // nothing changed (a resync)
	}
	return m
}

// TestCompilerIncremental: a Compiler reused across random changes gives
// exactly what a fresh compile gives, on every node.
func TestCompilerIncremental(t *testing.T) {
	hits, cnpHits := 0, 0
	for seed := range 1000 {
		r := rand.New(rand.NewPCG(uint64(seed), 77))
		m := genModel(r)
		xs := map[string]*Compiler{}
		for _, n := range genNodes {
			xs[n] = NewCompiler()
		}
		for step := range 12 {
			for _, n := range genNodes {
				got := xs[n].Compile(m, n)
				want := Compile(m, n)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d node %s: incremental differs\n--- incremental\n%s\n--- fresh\n%s\nmodel:\n%s",
						seed, step, n, Render(got), Render(want), dumpModel(m))
				}
				reused, _ := xs[n].Reused()
				hits += reused
				cnpHits += xs[n].cnpReused
			}
			m = mutate(r, m)
		}
	}
	if hits < 1000 {
		t.Fatalf("only %d namespaces reused: the test does not exercise the memo", hits)
	}
	if cnpHits < 1000 {
		t.Fatalf("only %d cluster policies reused: the test does not exercise their memo", cnpHits)
	}
	t.Logf("%d namespaces and %d cluster policies reused", hits, cnpHits)
}
