//go:build !linux

package rpc

import "errors"

// dropStartupCode is Linux's (settle_linux.go).
func dropStartupCode() (uint64, error) {
	return 0, errors.New("dropping start-up code: Linux only")
}
