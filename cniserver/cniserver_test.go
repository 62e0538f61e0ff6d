package cniserver

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

type handlerFunc func(context.Context, *Request) ([]byte, error)

func (f handlerFunc) ServeCNI(ctx context.Context, r *Request) ([]byte, error) { return f(ctx, r) }

func serveOn(t *testing.T, h Handler) (*Client, *Server) {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "loom.sock")
	l, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return NewClient(socket), srv
}

func TestRoundTrip(t *testing.T) {
	c, _ := serveOn(t, handlerFunc(func(_ context.Context, r *Request) ([]byte, error) {
		switch r.Command {
		case "ADD":
			return []byte(`{"cniVersion":"1.1.0","ips":[]}`), nil
		case "CHECK":
			return nil, types.NewError(types.ErrTryAgainLater, "busy", "details")
		}
		return nil, errors.New("plain failure")
	}))
	ctx := context.Background()
	out, err := c.Do(ctx, &Request{Command: "ADD", ContainerID: "c1", Config: []byte(`{"secret":"x"}`)})
	if err != nil || string(out) != `{"cniVersion":"1.1.0","ips":[]}` {
		t.Fatalf("ADD = %s, %v", out, err)
	}
	_, err = c.Do(ctx, &Request{Command: "CHECK"})
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater || ce.Details != "details" {
		t.Fatalf("CHECK error = %#v, want the handler's CNI error", err)
	}
	_, err = c.Do(ctx, &Request{Command: "DEL"})
	if !errors.As(err, &ce) || ce.Code != types.ErrInternal || ce.Msg != "plain failure" {
		t.Fatalf("DEL error = %#v, want an internal CNI error", err)
	}
}

func TestNoServerIsUnavailable(t *testing.T) {
	_, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Do(context.Background(), &Request{Command: "DEL"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestShutdownWaitsForCallsInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	c, srv := serveOn(t, handlerFunc(func(context.Context, *Request) ([]byte, error) {
		close(started)
		<-release
		return []byte(`"done"`), nil
	}))
	result := make(chan string, 1)
	go func() {
		out, _ := c.Do(context.Background(), &Request{Command: "ADD"})
		result <- string(out)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case <-shut:
		t.Fatal("Shutdown returned while a call was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if got := <-result; got != `"done"` {
		t.Fatalf("the call in flight got %q", got)
	}
	if _, err := c.Do(context.Background(), &Request{Command: "ADD"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after Shutdown: %v, want ErrUnavailable", err)
	}
}
