package rollback

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestUnwindNewestFirstOnlyOnError(t *testing.T) {
	var order []int
	var s Stack
	for i := 1; i <= 3; i++ {
		i := i
		s = append(s, func() error { order = append(order, i); return nil })
	}
	var err error
	s.Unwind("p", &err)
	if len(order) != 0 {
		t.Fatalf("ran on success: %v", order)
	}
	err = types.NewError(7, "p: field \"x\": bad", "")
	s.Unwind("p", &err)
	if len(order) != 3 || order[0] != 3 || order[2] != 1 {
		t.Fatalf("order %v, want [3 2 1]", order)
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 7 || te.Details != "" {
		t.Fatalf("clean rollback changed the error: %#v", err)
	}
}

func TestUnwindKeepsCodeAndReportsLeftovers(t *testing.T) {
	s := Stack{func() error { return errors.New("delete veth: busy") }}
	err := error(types.NewError(11, "p: try later", "first"))
	s.Unwind("p", &err)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 11 || te.Msg != "p: try later" ||
		!strings.Contains(te.Details, "first") || !strings.Contains(te.Details, "rollback incomplete: delete veth: busy") {
		t.Fatalf("got %#v", err)
	}
	err = errors.New("plain")
	s.Unwind("p", &err)
	if !errors.As(err, &te) || te.Code != 999 || te.Msg != "p: plain" {
		t.Fatalf("plain error: %#v", err)
	}
}
