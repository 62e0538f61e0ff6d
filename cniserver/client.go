package cniserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// ErrUnavailable means loomd is not answering on its socket: not running, or not yet listening.
var ErrUnavailable = errors.New("loomd is not answering")

// Client sends CNI calls to loomd.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for loomd's socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Do sends a request and returns the bytes the plugin must print. A CNI error from loomd is
// returned as *types.Error; a connection failure wraps ErrUnavailable.
func (c *Client) Do(ctx context.Context, req *Request) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://loomd/cni", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w", ErrUnavailable, c.socket, err)
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(hresp.Body)
	if err != nil {
		return nil, fmt.Errorf("read loomd response: %w", err)
	}
	var resp response
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("decode loomd response (HTTP %d): %w", hresp.StatusCode, err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}
