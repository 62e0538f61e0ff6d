package controller

// The webhook's TLS material lives in one Secret that every replica shares: a CA, whose
// certificate goes into the ValidatingWebhookConfiguration's caBundle, and a serving
// certificate it signed. The first replica to start creates it; a replica that loses the
// create race reads the winner's. A certificate with less than renewBefore left, or whose
// names no longer cover the webhook's address, is replaced by an Update that carries the
// resourceVersion it read, so two replicas renewing at once cannot overwrite each other:
// the loser reads the winner's result. The CA outlives many serving certificates; when it
// is replaced itself, ca.crt keeps the old CA after the new one until the old one expires,
// so replicas that still serve a certificate of the old CA stay trusted until they reload.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Keys of the webhook Secret. tls.crt and tls.key make it a kubernetes.io/tls Secret.
const (
	secretCACert = "ca.crt"
	secretCAKey  = "ca.key"
	secretCert   = corev1.TLSCertKey
	secretKey    = corev1.TLSPrivateKeyKey
)

const (
	caValidity      = 10 * 365 * 24 * time.Hour
	servingValidity = 365 * 24 * time.Hour
	renewBefore     = 30 * 24 * time.Hour
	// clockSkew backdates certificates so that a peer whose clock runs a little behind
	// accepts them at once.
	clockSkew = 5 * time.Minute
)

// webhookCerts is the parsed content of the webhook Secret.
type webhookCerts struct {
	ca      *x509.Certificate // signs the serving certificate
	caKey   *ecdsa.PrivateKey
	caPEM   []byte // every CA clients should trust, ca first
	serving tls.Certificate
	leaf    *x509.Certificate
}

// parseWebhookCerts reads the webhook Secret's data.
func parseWebhookCerts(data map[string][]byte) (*webhookCerts, error) {
	caBlock, _ := pem.Decode(data[secretCACert])
	if caBlock == nil {
		return nil, fmt.Errorf("parse %s: no PEM certificate", secretCACert)
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", secretCACert, err)
	}
	caKey, err := parseECKey(data[secretCAKey])
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", secretCAKey, err)
	}
	serving, err := tls.X509KeyPair(data[secretCert], data[secretKey])
	if err != nil {
		return nil, fmt.Errorf("parse %s and %s: %w", secretCert, secretKey, err)
	}
	return &webhookCerts{ca: ca, caKey: caKey, caPEM: data[secretCACert], serving: serving, leaf: serving.Leaf}, nil
}

func parseECKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// staleCA says why the CA must be replaced, or "" when it can stay.
func (c *webhookCerts) staleCA(now time.Time) string {
	if !c.ca.IsCA {
		return "the CA certificate is not a CA"
	}
	if !c.caKey.PublicKey.Equal(c.ca.PublicKey) {
		return "the CA key does not match its certificate"
	}
	if left := c.ca.NotAfter.Sub(now); left < renewBefore {
		return fmt.Sprintf("the CA expires at %s", c.ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return ""
}

// staleServing says why the serving certificate must be replaced, or "" when it can stay.
func (c *webhookCerts) staleServing(hosts []string, now time.Time) string {
	if err := c.leaf.CheckSignatureFrom(c.ca); err != nil {
		return "the serving certificate is not signed by the CA"
	}
	if left := c.leaf.NotAfter.Sub(now); left < renewBefore {
		return fmt.Sprintf("the serving certificate expires at %s", c.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, h := range hosts {
		if err := c.leaf.VerifyHostname(h); err != nil {
			return fmt.Sprintf("the serving certificate does not cover %s", h)
		}
	}
	return ""
}

// renewWebhookCerts returns the Secret data that replaces old (nil: none yet), keeping the
// CA when it is still good and reason why something was replaced ("" when nothing was).
func renewWebhookCerts(old map[string][]byte, hosts []string, now time.Time) (data map[string][]byte, reason string, err error) {
	cur, parseErr := parseWebhookCerts(old)
	switch {
	case old == nil:
		reason = "none exists"
	case parseErr != nil:
		reason = parseErr.Error()
	default:
		reason = cur.staleCA(now)
		if reason == "" {
			if reason = cur.staleServing(hosts, now); reason == "" {
				return old, "", nil
			}
		}
	}
	var caCert *x509.Certificate
	var caKey *ecdsa.PrivateKey
	var caPEM []byte
	if cur != nil && cur.staleCA(now) == "" {
		caCert, caKey, caPEM = cur.ca, cur.caKey, cur.caPEM
	} else {
		var caKeyPEM []byte
		caCert, caKey, caPEM, caKeyPEM, err = newCA(now)
		if err != nil {
			return nil, "", err
		}
		if cur != nil && now.Before(cur.ca.NotAfter) {
			// Trust the old CA too while replicas still serve what it signed.
			caPEM = append(caPEM, pemCert(cur.ca.Raw)...)
		}
		data = map[string][]byte{secretCAKey: caKeyPEM}
	}
	if data == nil {
		data = map[string][]byte{secretCAKey: old[secretCAKey]}
	}
	certPEM, keyPEM, err := issueServing(caCert, caKey, hosts, now)
	if err != nil {
		return nil, "", err
	}
	data[secretCACert], data[secretCert], data[secretKey] = caPEM, certPEM, keyPEM
	return data, reason, nil
}

// newCA makes a self-signed ECDSA P-256 CA.
func newCA(now time.Time) (cert *x509.Certificate, key *ecdsa.PrivateKey, certPEM, keyPEM []byte, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("loom-webhook-ca@%d", now.Unix())},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := sign(tmpl, tmpl, key, key)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	keyPEM, err = pemKey(key)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return cert, key, pemCert(der), keyPEM, nil
}

// issueServing makes a serving certificate for hosts (IP addresses or DNS names), signed by
// the CA.
func issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("issue serving certificate: no host names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(servingValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := sign(tmpl, ca, key, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign serving certificate for %v: %w", hosts, err)
	}
	keyPEM, err = pemKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), keyPEM, nil
}

func sign(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// certSecret keeps the webhook Secret valid for hosts.
type certSecret struct {
	secrets   corev1client.SecretsGetter
	namespace string
	name      string
	hosts     []string
	now       func() time.Time
}

// ensure returns the webhook Secret's certificates, creating the Secret or renewing what it
// holds when needed. Another replica doing the same at the same moment is not an error: a
// lost create or update race ends with the winner's certificates.
func (s *certSecret) ensure(ctx context.Context) (certs *webhookCerts, reason string, err error) {
	for range 5 {
		certs, reason, err = s.ensureOnce(ctx)
		if err == nil || !(apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) {
			break
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("ensure webhook secret %s/%s: %w", s.namespace, s.name, err)
	}
	return certs, reason, nil
}

func (s *certSecret) ensureOnce(ctx context.Context) (*webhookCerts, string, error) {
	api := s.secrets.Secrets(s.namespace)
	now := s.now()
	cur, err := api.Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		data, reason, renewErr := renewWebhookCerts(nil, s.hosts, now)
		if renewErr != nil {
			return nil, "", renewErr
		}
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: s.name, Labels: map[string]string{"app.kubernetes.io/managed-by": "loom-controller"}},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		created, createErr := api.Create(ctx, secret, metav1.CreateOptions{})
		if createErr != nil {
			return nil, "", createErr
		}
		certs, parseErr := parseWebhookCerts(created.Data)
		return certs, reason, parseErr
	}
	if err != nil {
		return nil, "", err
	}
	data, reason, err := renewWebhookCerts(cur.Data, s.hosts, now)
	if err != nil {
		return nil, "", err
	}
	if reason != "" {
		cur = cur.DeepCopy()
		cur.Data = data
		if cur, err = api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return nil, "", err
		}
	}
	certs, err := parseWebhookCerts(cur.Data)
	return certs, reason, err
}

// needsRenewal reports whether certs should be renewed for hosts now.
func (c *webhookCerts) needsRenewal(hosts []string, now time.Time) bool {
	return c.staleCA(now) != "" || c.staleServing(hosts, now) != ""
}

// sameCerts reports whether a and b hold the same CA bundle and serving certificate.
func sameCerts(a, b *webhookCerts) bool {
	if a == nil || b == nil {
		return a == b
	}
	return bytes.Equal(a.caPEM, b.caPEM) && slices.EqualFunc(a.serving.Certificate, b.serving.Certificate, bytes.Equal)
}

// certKeeper serves the webhook's current certificate and keeps it current: it renews the
// Secret when due, reloads the certificate when the Secret changes (another replica renewed
// it, or someone replaced it), and recreates the Secret when it is deleted.
type certKeeper struct {
	secret *certSecret
	cur    atomic.Pointer[webhookCerts]
	log    *slog.Logger
}

// getCertificate is the TLS server's tls.Config.GetCertificate.
func (k *certKeeper) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := k.cur.Load()
	if c == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return &c.serving, nil
}

// caBundle returns the CA certificates clients should trust, PEM encoded.
func (k *certKeeper) caBundle() []byte {
	if c := k.cur.Load(); c != nil {
		return c.caPEM
	}
	return nil
}

// set serves certs from now on; it reports whether they differ from what was served.
func (k *certKeeper) set(certs *webhookCerts) bool {
	return !sameCerts(k.cur.Swap(certs), certs)
}

// ensure makes the Secret valid (creating or renewing it) and serves what it holds.
func (k *certKeeper) ensure(ctx context.Context) (changed bool, err error) {
	certs, reason, err := k.secret.ensure(ctx)
	if err != nil {
		return false, err
	}
	if reason != "" {
		k.log.Info("webhook certificate written", "secret", k.secret.namespace+"/"+k.secret.name, "reason", reason,
			"notAfter", certs.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return k.set(certs), nil
}

// run keeps the served certificate in step with the Secret until ctx ends. sync is called
// after every change of the served certificates and every interval (it puts the CA bundle
// into the webhook registration); its errors are logged and retried on the next round.
func (k *certKeeper) run(ctx context.Context, kube kubernetes.Interface, interval time.Duration, sync func(context.Context) error) {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(k.secret.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", k.secret.name).String()
		}))
	inf := f.Core().V1().Secrets().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	f.Start(ctx.Done())
	defer f.Shutdown()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		// Whatever woke us, the Secret is read back through ensure: it renews what is due,
		// recreates a deleted Secret and returns what another replica wrote.
		changedCerts, err := k.ensure(ctx)
		if err != nil {
			k.log.Warn("keep webhook certificate", "error", err)
		}
		if changedCerts {
			k.log.Info("serving a new webhook certificate", "notAfter", k.cur.Load().leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if syncErr := sync(ctx); syncErr != nil {
			k.log.Warn("register webhook", "error", syncErr)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
		}
	}
}
