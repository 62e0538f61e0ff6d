package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// A Handler serves one CNI call and returns the bytes the plugin prints (a result for ADD,
// nothing for the others). Errors that are *types.Error keep their code; others become
// types.ErrInternal.
type Handler interface {
	ServeCNI(ctx context.Context, req *Request) ([]byte, error)
}

// Mux serves each call with the Handler of the plugin that forwarded it (Request.Plugin).
type Mux map[string]Handler

// ServeCNI dispatches req by its Plugin.
func (m Mux) ServeCNI(ctx context.Context, req *Request) ([]byte, error) {
	h, ok := m[req.Plugin]
	if !ok {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("loomd does not serve plugin %q", req.Plugin), "")
	}
	return h.ServeCNI(ctx, req)
}

const (
	// maxMessage bounds a request or an answer: CNI configurations and results are small.
	maxMessage = 4 << 20
	// readTimeout bounds how long a client may take to send its request.
	readTimeout = 10 * time.Second
)

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

// Server serves CNI calls on a unix socket: one call per connection, the request as JSON
// followed by the client closing its side for writing, the answer as JSON. The protocol is
// this small so that the loom binary needs no HTTP stack and starts as fast as a reference
// plugin.
//
// A call runs to completion even if the client goes away: a runtime that gives up on an ADD
// follows with a DEL, which waits for the ADD and then undoes it.
type Server struct {
	h Handler

	mu       sync.Mutex
	listener net.Listener
	closed   bool
	inflight sync.WaitGroup
}

// NewServer returns a server for h; run it with Serve on a Listen listener.
func NewServer(h Handler) *Server { return &Server{h: h} }

// Serve accepts calls until Shutdown, then returns nil.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listener = l
	s.mu.Unlock()
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		s.inflight.Add(1)
		go func() {
			defer s.inflight.Done()
			s.serve(conn)
		}()
	}
}

func (s *Server) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	var req Request
	var resp response
	if err := json.NewDecoder(io.LimitReader(conn, maxMessage)).Decode(&req); err != nil {
		resp.Error = types.NewError(types.ErrDecodingFailure, "decode request", err.Error())
	} else if out, err := s.h.ServeCNI(context.Background(), &req); err != nil {
		resp.Error = asCNIError(err)
	} else {
		resp.Result = out
	}
	conn.SetReadDeadline(time.Time{})
	b, err := json.Marshal(resp)
	if err != nil {
		b, _ = json.Marshal(response{Error: types.NewError(types.ErrInternal, "encode answer", err.Error())})
	}
	conn.Write(b)
}

// Shutdown stops accepting calls and waits, until ctx ends, for those in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.listener != nil {
		s.listener.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cni server: calls still in flight: %w", ctx.Err())
	}
}

func asCNIError(err error) *types.Error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
