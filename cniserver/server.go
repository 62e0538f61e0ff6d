package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// A Handler serves one CNI call and returns the bytes the plugin prints (a result for ADD,
// nothing for the others). Errors that are *types.Error keep their code; others become
// types.ErrInternal.
type Handler interface {
	ServeCNI(ctx context.Context, req *Request) ([]byte, error)
}

// maxRequest bounds a request body: CNI configurations are small.
const maxRequest = 4 << 20

// Listen creates loomd's socket, replacing a stale one left by a previous loomd, readable and
// writable by root only.
func Listen(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restrict socket: %w", err)
	}
	return l, nil
}

// NewServer returns the HTTP server for CNI calls; run it with Serve on a Listen listener.
func NewServer(h Handler) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cni", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		var resp response
		if err != nil {
			resp.Error = types.NewError(types.ErrDecodingFailure, "decode request", err.Error())
		} else if out, err := h.ServeCNI(r.Context(), &req); err != nil {
			resp.Error = asCNIError(err)
		} else {
			resp.Result = out
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

func asCNIError(err error) *types.Error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
