package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newCertSecret(cs *fake.Clientset, hosts []string, now *time.Time) *certSecret {
	return &certSecret{secrets: cs.CoreV1(), namespace: "kube-system", name: "loom-webhook-tls", hosts: hosts,
		now: func() time.Time { return *now }}
}

// writes counts the create and update calls on Secrets.
func writes(cs *fake.Clientset) (creates, updates int) {
	for _, a := range cs.Actions() {
		if a.GetResource().Resource != "secrets" {
			continue
		}
		switch a.GetVerb() {
		case "create":
			creates++
		case "update":
			updates++
		}
	}
	return creates, updates
}

func pemCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// verifies checks that certs' serving certificate verifies for host against its CA bundle
// at time at.
func verifies(t *testing.T, certs *webhookCerts, host string, at time.Time) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certs.caPEM) {
		t.Fatal("the CA bundle holds no certificate")
	}
	if _, err := certs.leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: at}); err != nil {
		t.Errorf("serving certificate does not verify for %s: %v", host, err)
	}
}

func TestCertSecretCreateReuseRenew(t *testing.T) {
	cs := fake.NewClientset()
	now := t0
	hosts := []string{"198.18.1.1"}
	s := newCertSecret(cs, hosts, &now)
	ctx := context.Background()

	first, reason, err := s.ensure(ctx)
	if err != nil || reason != "none exists" {
		t.Fatalf("first ensure: reason %q, %v", reason, err)
	}
	secret, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "loom-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("secret type %q, want %q", secret.Type, corev1.SecretTypeTLS)
	}
	for _, k := range []string{"ca.crt", "ca.key", "tls.crt", "tls.key"} {
		if len(secret.Data[k]) == 0 {
			t.Errorf("secret has no %s", k)
		}
	}
	verifies(t, first, "198.18.1.1", now)
	if first.leaf.NotAfter.Sub(now) < 300*24*time.Hour || first.ca.NotAfter.Sub(now) < 9*365*24*time.Hour {
		t.Errorf("serving certificate until %s, CA until %s: too short", first.leaf.NotAfter, first.ca.NotAfter)
	}

	// A second start, a day later: the same certificates, nothing written.
	now = t0.Add(24 * time.Hour)
	again, reason, err := s.ensure(ctx)
	if err != nil || reason != "" || !sameCerts(first, again) {
		t.Fatalf("second ensure: reason %q, same %v, %v", reason, sameCerts(first, again), err)
	}
	if c, u := writes(cs); c != 1 || u != 0 {
		t.Errorf("%d creates and %d updates, want the one create", c, u)
	}

	// 29 days before the serving certificate expires: a new one from the same CA.
	now = first.leaf.NotAfter.Add(-29 * 24 * time.Hour)
	renewed, reason, err := s.ensure(ctx)
	if err != nil || !strings.Contains(reason, "serving certificate expires") {
		t.Fatalf("renewal: reason %q, %v", reason, err)
	}
	if sameCerts(first, renewed) || !bytes.Equal(renewed.caPEM, first.caPEM) {
		t.Errorf("renewal should replace the serving certificate and keep the CA")
	}
	if !renewed.leaf.NotAfter.After(first.leaf.NotAfter) {
		t.Errorf("renewed certificate ends %s, not after the old one's %s", renewed.leaf.NotAfter, first.leaf.NotAfter)
	}
	verifies(t, renewed, "198.18.1.1", now)

	// 20 days before the CA expires: a new CA, trusted along with the old one.
	now = first.ca.NotAfter.Add(-20 * 24 * time.Hour)
	rotated, reason, err := s.ensure(ctx)
	if err != nil || !strings.Contains(reason, "CA expires") {
		t.Fatalf("CA rotation: reason %q, %v", reason, err)
	}
	bundle := pemCerts(t, rotated.caPEM)
	if len(bundle) != 2 || !bundle[1].Equal(first.ca) || bundle[0].Equal(first.ca) || !bundle[0].Equal(rotated.ca) {
		t.Fatalf("CA bundle after rotation holds %d certificates, want the new CA then the old one", len(bundle))
	}
	verifies(t, rotated, "198.18.1.1", now)
	// A replica still serving what the old CA signed stays trusted by the new bundle.
	verifies(t, &webhookCerts{caPEM: rotated.caPEM, leaf: renewed.leaf}, "198.18.1.1", renewed.leaf.NotBefore.Add(time.Hour))
}

func TestCertSecretReissuesForNewHosts(t *testing.T) {
	cs := fake.NewClientset()
	now := t0
	ctx := context.Background()
	if _, _, err := newCertSecret(cs, []string{"198.18.1.1"}, &now).ensure(ctx); err != nil {
		t.Fatal(err)
	}
	svc := webhookEndpoint{service: webhookService{namespace: "kube-system", name: "loom-controller"}}
	certs, reason, err := newCertSecret(cs, svc.hosts(), &now).ensure(ctx)
	if err != nil || !strings.Contains(reason, "does not cover") {
		t.Fatalf("reason %q, %v", reason, err)
	}
	for _, h := range []string{"loom-controller.kube-system.svc", "loom-controller.kube-system.svc.cluster.local"} {
		verifies(t, certs, h, now)
	}
}

func TestCertSecretReplacesGarbage(t *testing.T) {
	cs := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "loom-webhook-tls"},
		Data:       map[string][]byte{"ca.crt": []byte("not a certificate")},
	})
	now := t0
	certs, reason, err := newCertSecret(cs, []string{"webhook.example"}, &now).ensure(context.Background())
	if err != nil || !strings.Contains(reason, "ca.crt") {
		t.Fatalf("reason %q, %v", reason, err)
	}
	verifies(t, certs, "webhook.example", now)
}

// Another replica creates the Secret between our Get and our Create: we serve theirs.
func TestCertSecretLosesCreateRace(t *testing.T) {
	now := t0
	theirs, _, err := renewWebhookCerts(nil, []string{"198.18.1.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset()
	cs.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "loom-webhook-tls"}, Data: theirs}
		if addErr := cs.Tracker().Add(s); addErr != nil {
			t.Fatal(addErr)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, s.Name)
	})
	certs, _, err := newCertSecret(cs, []string{"198.18.1.1"}, &now).ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(certs.caPEM, theirs["ca.crt"]) || !bytes.Equal(certs.serving.Certificate[0], mustLeaf(t, theirs).Raw) {
		t.Error("after losing the create race, the certificates are not the winner's")
	}
}

// Another replica renews the Secret between our Get and our Update: we serve theirs.
func TestCertSecretLosesRenewalRace(t *testing.T) {
	now := t0
	old, _, err := renewWebhookCerts(nil, []string{"198.18.1.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "loom-webhook-tls"}, Data: old})
	now = mustLeaf(t, old).NotAfter.Add(-time.Hour)
	theirs, _, err := renewWebhookCerts(old, []string{"198.18.1.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	raced := false
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "loom-webhook-tls"}, Data: theirs}
		if updateErr := cs.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, "kube-system"); updateErr != nil {
			t.Fatal(updateErr)
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, s.Name, nil)
	})
	certs, _, err := newCertSecret(cs, []string{"198.18.1.1"}, &now).ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !raced || !bytes.Equal(certs.serving.Certificate[0], mustLeaf(t, theirs).Raw) {
		t.Errorf("after losing the renewal race (raced %v), the certificate is not the winner's", raced)
	}
	if _, u := writes(cs); u != 1 {
		t.Errorf("%d updates, want only the one that lost", u)
	}
}

// Two replicas starting at once end up serving the same certificates.
func TestCertSecretConcurrentStarts(t *testing.T) {
	cs := fake.NewClientset()
	now := t0
	var wg sync.WaitGroup
	got := make([]*webhookCerts, 4)
	for i := range got {
		wg.Go(func() {
			c, _, err := newCertSecret(cs, []string{"198.18.1.1"}, &now).ensure(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	for i := 1; i < len(got); i++ {
		if !sameCerts(got[0], got[i]) {
			t.Fatalf("replica %d serves other certificates than replica 0", i)
		}
	}
}

func mustLeaf(t *testing.T, data map[string][]byte) *x509.Certificate {
	t.Helper()
	c, err := parseWebhookCerts(data)
	if err != nil {
		t.Fatal(err)
	}
	return c.leaf
}

// The server answers over TLS with the keeper's certificate, and a new one is served from
// the next handshake on, without a restart.
func TestWebhookServesOverTLSAndReloads(t *testing.T) {
	now := time.Now()
	cs := fake.NewClientset()
	keeper := &certKeeper{secret: newCertSecret(cs, []string{"127.0.0.1"}, &now), log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := keeper.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := listenWebhook("127.0.0.1:0", webhookHandler(fixtureAdmission(t), newDecisionCounter().m, slog.New(slog.DiscardHandler)), keeper.getCertificate, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.serve(ctx) }()

	call := func() *x509.Certificate {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(keeper.caBundle())
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		defer client.CloseIdleConnections()
		body := reviewOf(t, podKind, admissionv1.Create, "ta", pod("ta", "p", netAdmin))
		resp, err := client.Post("https://"+srv.addr().String()+pathPods, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"allowed":false`) {
			t.Errorf("HTTP %d: %s", resp.StatusCode, b)
		}
		return resp.TLS.PeerCertificates[0]
	}
	first := call()
	// Someone deletes the Secret; the next ensure makes new certificates, served at once.
	if err := cs.CoreV1().Secrets("kube-system").Delete(ctx, "loom-webhook-tls", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if changed, err := keeper.ensure(ctx); err != nil || !changed {
		t.Fatalf("ensure after deletion: changed %v, %v", changed, err)
	}
	if second := call(); second.Equal(first) {
		t.Error("the server still presents the old certificate")
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}
