package main

import (
	"errors"
	"fmt"
)

var errFail = errors.New("failed")

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
