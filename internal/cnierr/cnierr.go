// Package cnierr builds the CNI spec's error values (types.Error) with the
// spec's codes and messages that name the plugin, the offending field and
// what is wrong with it, so an operator reading a runtime log knows the fix.
//
// It owns nothing but error construction; it never logs or exits.
package cnierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Codes from SPEC.md 1.1.0 "Error" section. Codes 1-99 are reserved by the spec.
const (
	IncompatibleVersion uint = types.ErrIncompatibleCNIVersion // 1
	UnsupportedField    uint = types.ErrUnsupportedField       // 2
	UnknownContainer    uint = types.ErrUnknownContainer       // 3
	InvalidEnv          uint = types.ErrInvalidEnvironmentVariables
	IOFailure           uint = types.ErrIOFailure            // 5
	DecodingFailure     uint = types.ErrDecodingFailure      // 6
	InvalidConfig       uint = types.ErrInvalidNetworkConfig // 7
	TryAgainLater       uint = types.ErrTryAgainLater        // 11
	NotAvailable        uint = 50                            // STATUS: plugin not available (spec 1.1; no constant in libcni v1.2)
	LimitedConnectivity uint = 51                            // STATUS: limited connectivity (spec 1.1)
	Internal            uint = types.ErrInternal             // 999
)

// Field reports an invalid value of a config field (code 7), e.g.
// `bridge: field "mtu": 70000 is above the maximum 65535`.
func Field(plugin, field, format string, a ...any) *types.Error {
	return types.NewError(InvalidConfig, fmt.Sprintf("%s: field %q: %s", plugin, field, fmt.Sprintf(format, a...)), "")
}

// Unsupported reports a field podnet understands but cannot honour on this
// system (code 2), with the reason.
func Unsupported(plugin, field, why string) *types.Error {
	return types.NewError(UnsupportedField, fmt.Sprintf("%s: field %q is not supported: %s", plugin, field, why), "")
}

// Env reports a bad CNI_* environment value or CNI_ARGS entry (code 4).
func Env(plugin, variable, format string, a ...any) *types.Error {
	return types.NewError(InvalidEnv, fmt.Sprintf("%s: %s: %s", plugin, variable, fmt.Sprintf(format, a...)), "")
}

// New builds an error with an explicit code.
func New(code uint, plugin, format string, a ...any) *types.Error {
	return types.NewError(code, plugin+": "+fmt.Sprintf(format, a...), "")
}

// Wrap turns err into a CNI error with code unless it already is one, in
// which case it is returned unchanged (the innermost code wins).
func Wrap(code uint, plugin string, err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	msg := fmt.Sprintf(format, a...)
	if msg != "" {
		msg += ": "
	}
	return types.NewError(code, fmt.Sprintf("%s: %s%v", plugin, msg, err), "")
}

// Decode converts a JSON decoding error of a plugin's stdin into a code-6
// error whose message names the field and the expected type, instead of Go's
// "cannot unmarshal string into Go struct field conf.mtu of type int".
func Decode(plugin string, err error) *types.Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return types.NewError(DecodingFailure, fmt.Sprintf("%s: field %q: expected %s, got JSON %s", plugin, field, kindName(te.Type.Kind().String()), te.Value), "")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		if IsTooDeep(err.Error()) {
			return TooDeep(plugin, err.Error())
		}
		return types.NewError(DecodingFailure, fmt.Sprintf("%s: config is not valid JSON at byte %d: %v", plugin, se.Offset, err), "")
	}
	var te2 *types.Error
	if errors.As(err, &te2) {
		return te2
	}
	return types.NewError(DecodingFailure, fmt.Sprintf("%s: cannot decode config: %v", plugin, err), "")
}

// MaxJSONDepth is encoding/json's nesting limit (its maxNestingDepth): a
// config nested deeper cannot be decoded at all.
const MaxJSONDepth = 10000

// IsTooDeep reports whether msg is (or wraps) encoding/json's error for
// input nested deeper than MaxJSONDepth: "invalid character '[' exceeded
// max depth".
func IsTooDeep(msg string) bool { return strings.Contains(msg, "exceeded max depth") }

// TooDeep is the code-6 error for a config nested deeper than
// MaxJSONDepth, in words an operator can act on; the decoder's own
// message goes into the details.
func TooDeep(plugin, decoderMsg string) *types.Error {
	return types.NewError(DecodingFailure, fmt.Sprintf("%s: config: JSON nested more than %d levels deep, which no CNI config needs: "+
		"the file or whatever generated it is broken; remove the nesting", plugin, MaxJSONDepth), decoderMsg)
}

func kindName(k string) string {
	switch k {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "slice", "array":
		return "a list"
	case "map", "struct":
		return "an object"
	}
	return k
}
