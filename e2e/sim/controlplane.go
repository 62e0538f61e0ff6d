package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/deployments/crds"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) etcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(c.st.EtcdClientPort) }

func (c *Cluster) etcdArgs() []string {
	peer := "http://127.0.0.1:" + strconv.Itoa(c.st.EtcdPeerPort)
	return []string{c.st.Options.Etcd,
		"--name=sim",
		"--data-dir=" + c.slot.etcdData(),
		"--listen-client-urls=" + c.etcdURL(),
		"--advertise-client-urls=" + c.etcdURL(),
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=sim=" + peer,
		"--initial-cluster-state=new",
		"--snapshot-count=10000",
		"--logger=zap",
		"--log-outputs=stderr",
	}
}

func (c *Cluster) apiServerArgs() []string {
	ip := c.st.APIServerIP
	return []string{c.st.Options.KubeAPIServer,
		"--etcd-servers=" + c.etcdURL(),
		"--bind-address=" + ip,
		"--advertise-address=" + ip,
		"--secure-port=6443",
		"--cert-dir=" + c.l.pki(""),
		"--tls-cert-file=" + c.l.pki("apiserver.crt"),
		"--tls-private-key-file=" + c.l.pki("apiserver.key"),
		"--client-ca-file=" + c.l.pki("ca.crt"),
		"--token-auth-file=" + c.l.pki("tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.l.pki("sa.pub"),
		"--service-account-signing-key-file=" + c.l.pki("sa.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=RBAC",
		// The API server's own address is not reachable as a Service endpoint here.
		"--endpoint-reconciler-type=none",
		// No service-account controller creates "default" ServiceAccounts, and no node
		// lifecycle controller would lift the not-ready taint.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
}

// startEtcd starts etcd and waits until it answers.
func (c *Cluster) startEtcd(ctx context.Context) error {
	if err := os.MkdirAll(c.slot.etcdData(), 0o700); err != nil {
		return err
	}
	ref, err := startDetached(c.etcdArgs(), environWithout("ETCD_"), c.l.log("etcd"), c.slot.pidFile("etcd"))
	if err != nil {
		return err
	}
	return waitServing(ctx, ref, http.DefaultClient, c.etcdURL()+"/health", 20*time.Second, "etcd", c.l.log("etcd"))
}

func (c *Cluster) startAPIServerProcess() (procRef, error) {
	return startDetached(c.apiServerArgs(), os.Environ(), c.l.log("apiserver"), c.slot.pidFile("apiserver"))
}

// waitAPIServer waits until the API server's /readyz answers ok.
func (c *Cluster) waitAPIServer(ctx context.Context, ref procRef) error {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(c.l.pki("ca.crt"))
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	return waitServing(ctx, ref, client, c.APIServerURL()+"/readyz", 60*time.Second, "kube-apiserver", c.l.log("apiserver"))
}

// waitServing waits until url answers 200, failing early if the process serving it exits.
func waitServing(ctx context.Context, ref procRef, client *http.Client, url string, timeout time.Duration, what, logFile string) error {
	return poll(ctx, timeout, func() (bool, error) {
		if !ref.alive() {
			return false, fmt.Errorf("%s exited: see %s", what, logFile)
		}
		return answersOK(ctx, client, url), nil
	})
}

// answersOK reports whether a GET of url returns 200.
func answersOK(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// StopAPIServer kills the API server, as a crash or an outage would (a graceful stop waits
// a minute for watches to drain); etcd keeps the cluster's state.
func (c *Cluster) StopAPIServer() error {
	ref, err := readPidFile(c.slot.pidFile("apiserver"))
	if err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	ref.signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return waitGone(ctx, []procRef{ref})
}

// StartAPIServer starts the API server again with the same flags and data, and waits until
// it is ready. It does nothing if the API server runs.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if ref, err := readPidFile(c.slot.pidFile("apiserver")); err == nil && ref.alive() {
		return nil
	}
	ref, err := c.startAPIServerProcess()
	if err != nil {
		return err
	}
	return c.waitAPIServer(ctx, ref)
}

// installCRDs creates every CustomResourceDefinition in deployments/crds and waits until the
// API server serves them.
func (c *Cluster) installCRDs(ctx context.Context) error {
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	crdRes := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	files, err := fs.Glob(crds.Manifests, "*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := fs.ReadFile(crds.Manifests, f)
		if err != nil {
			return err
		}
		var obj unstructured.Unstructured
		if err = yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		if _, err = crdRes.Create(ctx, &obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", obj.GetName(), err)
		}
		err = poll(ctx, 30*time.Second, func() (bool, error) {
			got, getErr := crdRes.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if getErr != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", obj.GetName(), err)
		}
	}
	return nil
}

// poll calls check every 50 ms until it returns true or an error, or the timeout or the
// context ends.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
