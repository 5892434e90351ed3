package policy

import (
	"math/rand/v2"
	"testing"
)

// shuffled is m with its pods and policies in another order.
func shuffled(r *rand.Rand, m Model) Model {
	s := Model{Namespaces: m.Namespaces}
	s.Pods = append(s.Pods, m.Pods...)
	s.Policies = append(s.Policies, m.Policies...)
	s.ClusterPolicies = append(s.ClusterPolicies, m.ClusterPolicies...)
	r.Shuffle(len(s.ClusterPolicies), func(i, j int) {
		s.ClusterPolicies[i], s.ClusterPolicies[j] = s.ClusterPolicies[j], s.ClusterPolicies[i]
	})
	r.Shuffle(len(s.Pods), func(i, j int) { s.Pods[i], s.Pods[j] = s.Pods[j], s.Pods[i] })
	r.Shuffle(len(s.Policies), func(i, j int) { s.Policies[i], s.Policies[j] = s.Policies[j], s.Policies[i] })
	return s
}

// FuzzCompile: for random models, every node's Ruleset satisfies the
// kernel's invariants, compiling the same model given in another order
// renders the same text, and Explain agrees with the reference evaluation.
func FuzzCompile(f *testing.F) {
	for i := range uint64(8) {
		f.Add(i, i*7+1)
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		r := rand.New(rand.NewPCG(a, b))
		m := genModel(r)
		for _, n := range []string{"n1", "n2"} {
			rs := Compile(m, n)
			checkInvariants(t, rs)
			if got, want := Render(Compile(shuffled(r, m), n)), Render(rs); got != want {
				t.Fatalf("order changes the output:\n%s\nversus\n%s", got, want)
			}
		}
		rsOf := rulesetsFor(t, m)
		for range 20 {
			p := genPacket(r, m)
			if e := Explain(rsOf(p.Src), rsOf(p.Dst), p); (e.Verdict == "allow") != refAllows(m, p) {
				t.Fatalf("%v: Explain: %s; reference disagrees", p, e)
			}
		}
	})
}

func TestCompileDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	m := bigModel(300, 500, 3, 10)
	want := Render(Compile(m, "n0"))
	for range 3 {
		if got := Render(Compile(shuffled(r, m), "n0")); got != want {
			t.Fatal("order of pods and policies changes the output")
		}
	}
}

// TestCompileConcurrent: Compile only reads the Model (run with -race).
func TestCompileConcurrent(t *testing.T) {
	m := bigModel(200, 300, 4, 8)
	want := Render(Compile(m, "n1"))
	done := make(chan string)
	for _, n := range []string{"n0", "n1", "n2", "n1"} {
		go func() { done <- Render(Compile(m, n)) }()
	}
	n1 := 0
	for range 4 {
		if got := <-done; got == want {
			n1++
		}
	}
	if n1 != 2 {
		t.Errorf("%d of the 2 concurrent compiles for n1 match", n1)
	}
}
