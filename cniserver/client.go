package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
)

// ErrUnavailable means loomd is not answering on its socket: not running, or not yet listening.
var ErrUnavailable = errors.New("loomd is not answering")

// Client sends CNI calls to loomd.
type Client struct {
	socket string
}

// NewClient returns a client for loomd's socket.
func NewClient(socket string) *Client { return &Client{socket: socket} }

// Do sends a request and returns the bytes the plugin must print. A CNI error from loomd is
// returned as *types.Error; a failure to connect wraps ErrUnavailable.
func (c *Client) Do(ctx context.Context, req *Request) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w", ErrUnavailable, c.socket, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if err = json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send request to loomd: %w", err)
	}
	if err = conn.(*net.UnixConn).CloseWrite(); err != nil {
		return nil, fmt.Errorf("send request to loomd: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxMessage))
	if err != nil {
		return nil, fmt.Errorf("read loomd's answer: %w", err)
	}
	var resp response
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("decode loomd's answer (%d bytes): %w", len(b), err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}
