package policy

import (
	"slices"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Parsing a label selector validates every key and value with regular
// expressions: at 5,000 policies that was a quarter of a compile. Parsed
// selectors are kept, keyed by their text, across compiles (a selector
// is a pure function of its text, so this changes no result).

type parsedSelector struct {
	sel labels.Selector
	str string // sel.String(): canonical
	err error
}

var selectorCache struct {
	sync.Mutex
	m map[string]parsedSelector
}

// maxCachedSelectors bounds the cache; past it, it starts over.
const maxCachedSelectors = 100_000

// parseSelector is metav1.LabelSelectorAsSelector(s), memoized.
func parseSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	p := parseSelectorString(s)
	return p.sel, p.err
}

// parseSelectorString is parseSelector with the selector's canonical
// text (sel.String(), which equal selectors share).
func parseSelectorString(s *metav1.LabelSelector) parsedSelector {
	key := selectorKey(s)
	selectorCache.Lock()
	p, ok := selectorCache.m[key]
	selectorCache.Unlock()
	if ok {
		return p
	}
	p.sel, p.err = metav1.LabelSelectorAsSelector(s)
	if p.err == nil {
		p.str = p.sel.String()
	}
	selectorCache.Lock()
	if selectorCache.m == nil || len(selectorCache.m) >= maxCachedSelectors {
		selectorCache.m = map[string]parsedSelector{}
	}
	selectorCache.m[key] = p
	selectorCache.Unlock()
	return p
}

// selectorKey is an unambiguous text of s (nil and {} differ).
func selectorKey(s *metav1.LabelSelector) string {
	if s == nil {
		return "nil"
	}
	var b strings.Builder
	b.WriteString("{")
	if len(s.MatchLabels) == 1 {
		for k, v := range s.MatchLabels {
			writeQuoted(&b, k)
			writeQuoted(&b, v)
		}
	} else {
		keys := make([]string, 0, len(s.MatchLabels))
		for k := range s.MatchLabels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			writeQuoted(&b, k)
			writeQuoted(&b, s.MatchLabels[k])
		}
	}
	b.WriteString("}[")
	for _, e := range s.MatchExpressions {
		writeQuoted(&b, e.Key)
		writeQuoted(&b, string(e.Operator))
		b.WriteString("(")
		for _, v := range e.Values {
			writeQuoted(&b, v)
		}
		b.WriteString(")")
	}
	b.WriteString("]")
	return b.String()
}

func writeQuoted(b *strings.Builder, s string) {
	if strings.Contains(s, `"`) {
		s = strings.ReplaceAll(s, `"`, `""`)
	}
	b.WriteString(s)
	b.WriteString(`" `)
}
