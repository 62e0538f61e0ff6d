package controller

// The admission webhook's transport: an HTTPS server every replica runs, which reads an
// AdmissionReview, hands its request to the decision for that kind (admission.go) and
// writes the AdmissionReview back. The API server reaches it through the
// ValidatingWebhookConfiguration that registration.go keeps; its certificate comes from the
// Secret that certs.go keeps.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/metrics"
)

// maxReviewBytes bounds an AdmissionReview: it carries the object and, on UPDATE, its old
// version, each at most the API server's 3 MiB request limit.
const maxReviewBytes = 7 << 20

// admitFunc decides one admission request.
type admitFunc func(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// reviewHandler serves AdmissionReviews (admission.k8s.io/v1) of kind with admit, and counts
// each decision in m.
func reviewHandler(kind string, admit admitFunc, m *metrics.Controller, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			m.WebhookDecision(kind, metrics.DecisionError, time.Since(start))
			http.Error(w, "want Content-Type application/json", http.StatusUnsupportedMediaType)
			return
		}
		var review admissionv1.AdmissionReview
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes))
		if err := dec.Decode(&review); err != nil {
			log.Warn("unreadable admission review", "path", r.URL.Path, "error", err)
			m.WebhookDecision(kind, metrics.DecisionError, time.Since(start))
			http.Error(w, fmt.Sprintf("decode AdmissionReview: %v", err), http.StatusBadRequest)
			return
		}
		if review.Request == nil {
			m.WebhookDecision(kind, metrics.DecisionError, time.Since(start))
			http.Error(w, "decode AdmissionReview: no request", http.StatusBadRequest)
			return
		}
		resp := admit(r.Context(), review.Request)
		m.WebhookDecision(kind, decision(resp), time.Since(start))
		resp.UID = review.Request.UID
		out := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
			Response: resp,
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(&out); err != nil {
			log.Debug("write admission review", "path", r.URL.Path, "error", err)
		}
	})
}

// decision is how metrics name resp: a refusal because the webhook could not decide (503)
// is an error, not a denial.
func decision(resp *admissionv1.AdmissionResponse) string {
	switch {
	case resp.Allowed:
		return metrics.DecisionAllowed
	case resp.Result != nil && resp.Result.Code == http.StatusServiceUnavailable:
		return metrics.DecisionError
	}
	return metrics.DecisionDenied
}

// webhookHandler routes each kind's path to its decision.
func webhookHandler(a *admission, m *metrics.Controller, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+pathPods, reviewHandler(metrics.KindPod, a.pod, m, log))
	mux.Handle("POST "+pathNADs, reviewHandler(metrics.KindNAD, a.nad, m, log))
	mux.Handle("POST "+pathTenants, reviewHandler(metrics.KindTenant, a.tenant, m, log))
	return mux
}

// webhookServer is the webhook's HTTPS server.
type webhookServer struct {
	l   net.Listener
	srv *http.Server
}

// listenWebhook listens on addr; serve then answers there over TLS with the certificate
// getCertificate returns at each handshake, so that a renewed one is used at once.
func listenWebhook(addr string, h http.Handler, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), log *slog.Logger) (*webhookServer, error) {
	if err := checkListenAddress(addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the webhook on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCertificate},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// TLS handshakes that fail (a scanner, a client that does not trust the CA yet) are
		// not worth more than a debug line.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return &webhookServer{l: l, srv: srv}, nil
}

// addr is the address the server listens on.
func (s *webhookServer) addr() net.Addr { return s.l.Addr() }

// serve serves until ctx ends, then gives requests in flight five seconds to finish.
func (s *webhookServer) serve(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.srv.Shutdown(shutdown)
	}()
	if err := s.srv.ServeTLS(s.l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve the webhook on %s: %w", s.l.Addr(), err)
	}
	return nil
}

// allowed is the response that admits a request.
func allowed() *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true}
}

// denied is the response that refuses a request with an HTTP status code and a message,
// which kubectl shows as it is.
func denied(code int32, reason metav1.StatusReason, message string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: message},
	}
}
