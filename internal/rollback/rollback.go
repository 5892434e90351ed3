// Package rollback is the undo stack of a CNI ADD: every step that creates
// something pushes its undo, and a failed ADD runs them newest first, so it
// leaves nothing behind. What the rollback itself could not undo is added
// to the returned CNI error's details, keeping the original code and
// message, so the operator sees both the cause and the leftovers.
package rollback

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
)

// Stack holds undo steps in the order they were pushed.
type Stack []func() error

// Unwind runs the steps newest first when *err is non-nil (use it as
// `defer undo.Unwind(name, &err)` with a named error return).
func (s Stack) Unwind(plugin string, err *error) {
	if *err == nil {
		return
	}
	var uerrs []error
	for i := len(s) - 1; i >= 0; i-- {
		if uerr := s[i](); uerr != nil {
			uerrs = append(uerrs, uerr)
		}
	}
	if len(uerrs) > 0 {
		*err = withErrors(plugin, *err, uerrs)
	}
}

func withErrors(plugin string, err error, uerrs []error) error {
	var te *types.Error
	if !errors.As(err, &te) {
		te = types.NewError(cnierr.Internal, plugin+": "+err.Error(), "")
	}
	details := "rollback incomplete: " + errors.Join(uerrs...).Error()
	if te.Details != "" {
		details = te.Details + "; " + details
	}
	return types.NewError(te.Code, te.Msg, details)
}
