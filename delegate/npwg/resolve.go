package npwg

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/loom-cni/loom/delegate"
)

// NADLister finds NetworkAttachmentDefinitions, typically from an informer cache. A missing
// one is reported with an error that satisfies apierrors.IsNotFound.
type NADLister interface {
	NAD(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error)
}

// Config configures a Resolver.
type Config struct {
	// NADs finds NetworkAttachmentDefinitions. Required.
	NADs NADLister
	// ConfDir holds CNI configuration files (*.conf, *.conflist, *.json) for NADs with an empty
	// spec.config and for a file-based default network. May be nil when neither is used.
	ConfDir fs.FS
	// DefaultNetwork is the cluster default network: "namespace/name" of a NAD, or "name" of a
	// NAD in SystemNamespace or, if there is no such NAD, of a file in ConfDir (by base name or
	// "name" field). Required.
	DefaultNetwork string
	// SystemNamespace holds cluster-level networks; "kube-system" when empty.
	SystemNamespace string
	// NamespaceIsolation restricts pods to NADs of their own namespace and GlobalNamespaces.
	NamespaceIsolation bool
	// GlobalNamespaces are namespaces whose NADs every pod may use under isolation.
	GlobalNamespaces []string
	// InProcess lists plugin types that loomd serves itself: a configuration whose only
	// plugin has one of these types becomes a Spec of that Kind instead of KindCNI.
	InProcess []string
	// Builtin holds networks defined by loomd itself, by name, as CNI configurations. The
	// default network may name one; a NAD of the same name in SystemNamespace takes precedence.
	Builtin map[string][]byte
	// CNIVersion is injected into configurations that declare no version; "1.0.0" when empty,
	// the newest version that every maintained plugin accepts.
	CNIVersion string
}

// Resolver turns a pod's network selection into attachment Specs. It is immutable and safe for
// concurrent use.
type Resolver struct {
	nads        NADLister
	confDir     fs.FS
	defaultNet  string // as configured, for errors and network names
	defaultNS   string // "" when DefaultNetwork is a bare name
	defaultName string
	systemNS    string
	isolation   bool
	global      map[string]bool
	cniVersion  string
	inProcess   map[string]bool
	builtin     map[string][]byte
}

// NewResolver validates c and returns a Resolver for it.
func NewResolver(c Config) (*Resolver, error) {
	r := &Resolver{
		nads:       c.NADs,
		confDir:    c.ConfDir,
		defaultNet: strings.TrimSpace(c.DefaultNetwork),
		systemNS:   c.SystemNamespace,
		isolation:  c.NamespaceIsolation,
		global:     map[string]bool{},
		cniVersion: c.CNIVersion,
		inProcess:  map[string]bool{},
		builtin:    c.Builtin,
	}
	for _, t := range c.InProcess {
		r.inProcess[t] = true
	}
	if r.nads == nil {
		return nil, errors.New("new npwg resolver: no NAD lister")
	}
	if r.systemNS == "" {
		r.systemNS = "kube-system"
	}
	if r.cniVersion == "" {
		r.cniVersion = "1.0.0"
	}
	if err := checkNamespace(r.systemNS); err != nil {
		return nil, fmt.Errorf("new npwg resolver: system namespace: %w", err)
	}
	for _, ns := range c.GlobalNamespaces {
		if err := checkNamespace(ns); err != nil {
			return nil, fmt.Errorf("new npwg resolver: global namespace: %w", err)
		}
		r.global[ns] = true
	}
	if !slices.Contains(version.All.SupportedVersions(), r.cniVersion) {
		return nil, fmt.Errorf("new npwg resolver: CNI version %q is not one of %s", r.cniVersion, strings.Join(version.All.SupportedVersions(), ", "))
	}
	switch ns, name, ok := strings.Cut(r.defaultNet, "/"); {
	case r.defaultNet == "":
		return nil, errors.New("new npwg resolver: no default network")
	case ok:
		if err := checkNamespace(ns); err != nil {
			return nil, fmt.Errorf("new npwg resolver: default network %q: %w", r.defaultNet, err)
		}
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("new npwg resolver: default network %q: %w", r.defaultNet, err)
		}
		r.defaultNS, r.defaultName = ns, name
	default:
		r.defaultName = r.defaultNet
	}
	return r, nil
}

// attachment is one planned attachment while a pod is being resolved.
type attachment struct {
	sel     Selection
	label   string // the network as errors name it
	ifname  string
	isDflt  bool
	fromPod bool // selected by the pod, as opposed to the configured default network
}

// Resolve returns the Specs of every attachment of pod, the default network first and then the
// networks of its networks annotation in order. defaultIfname is the runtime's CNI_IFNAME;
// runtimeConfig is the kubelet's, and it reaches the default network only. Everything is
// checked before Resolve returns, and the first problem found is returned as an *Error:
// first the annotations on their own, then namespace isolation, then the NADs themselves.
func (r *Resolver) Resolve(pod *corev1.Pod, defaultIfname string, runtimeConfig map[string]any) ([]delegate.Spec, error) {
	if pod == nil {
		return nil, errors.New("resolve networks: no pod")
	}
	podRef := pod.Namespace + "/" + pod.Name
	if e := utils.ValidateInterfaceName(defaultIfname); e != nil {
		return nil, fmt.Errorf("resolve networks of pod %s: runtime's interface name %q: %w", podRef, defaultIfname, e)
	}
	plan, err := r.plan(pod, podRef, defaultIfname)
	if err != nil {
		return nil, err
	}
	if err = r.check(pod.Namespace, podRef, plan); err != nil {
		return nil, err
	}
	specs := make([]delegate.Spec, 0, len(plan))
	for _, a := range plan {
		s, err := r.spec(podRef, a, runtimeConfig)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// plan parses the pod's annotations into the pod's attachments, default network first, and
// names their interfaces.
func (r *Resolver) plan(pod *corev1.Pod, podRef, defaultIfname string) ([]attachment, error) {
	sels, err := parser{pod: podRef, key: nadv1.NetworkAttachmentAnnot}.parse(pod.Annotations[nadv1.NetworkAttachmentAnnot], pod.Namespace)
	if err != nil {
		return nil, err
	}
	dflt := attachment{label: r.defaultNet, ifname: defaultIfname, isDflt: true}
	if v := pod.Annotations[DefaultNetworkAnnot]; strings.TrimSpace(v) != "" {
		p := parser{pod: podRef, key: DefaultNetworkAnnot}
		override, err := p.parse(v, r.systemNS)
		if err != nil {
			return nil, err
		}
		if len(override) != 1 {
			return nil, p.fail(0, "", problemf("keep exactly one network in it", "names %d networks; a pod has one default network", len(override)))
		}
		sel := override[0]
		if sel.Interface != "" && sel.Interface != defaultIfname {
			return nil, p.fail(1, sel.Ref(), problemf(`remove the interface name; the container runtime names the default network's interface`,
				"asks for interface %q but the default network's interface is %s", sel.Interface, defaultIfname))
		}
		dflt = attachment{sel: sel, label: sel.Ref(), ifname: defaultIfname, isDflt: true, fromPod: true}
	}

	plan := []attachment{dflt}
	for i, sel := range sels {
		ifname := sel.Interface
		if ifname == "" {
			ifname = fmt.Sprintf("net%d", i+1)
		}
		plan = append(plan, attachment{sel: sel, label: sel.Ref(), ifname: ifname, fromPod: true})
	}
	return plan, nil
}

// check runs every check of a plan that needs no NAD: interface names, default-route families
// and namespace isolation.
func (r *Resolver) check(podNS, podRef string, plan []attachment) error {
	ifnames := map[string]attachment{}
	routes := map[int]attachment{}
	for _, a := range plan {
		if prev, dup := ifnames[a.ifname]; dup {
			problem := fmt.Sprintf("networks %s and %s both use interface %s", prev.label, a.label, a.ifname)
			if prev.isDflt {
				problem = fmt.Sprintf("interface %s is the default network's (%s)", a.ifname, prev.label)
			}
			return &Error{Pod: podRef, Network: a.label, Problem: problem,
				Fix: fmt.Sprintf("give network %s another interface name (name@ifname, or \"interface\" in JSON)", a.label)}
		}
		ifnames[a.ifname] = a
		for _, gw := range a.sel.DefaultRoute {
			f := family(netip.MustParseAddr(gw)) // validated by Selection.validate
			if prev, dup := routes[f]; dup {
				return &Error{Pod: podRef, Network: a.label, Fix: "keep default-route for this IP family on one network",
					Problem: fmt.Sprintf("networks %s and %s both ask to carry the IPv%d default route", prev.label, a.label, f)}
			}
			routes[f] = a
		}
	}

	for _, a := range plan {
		if a.fromPod && !r.mayUse(podNS, a.sel.Namespace, a.isDflt) {
			fix := fmt.Sprintf("create the network in namespace %s or add %s to globalNamespaces", podNS, a.sel.Namespace)
			if a.isDflt {
				fix = fmt.Sprintf("use a network of namespace %s or %s, or add %s to globalNamespaces", podNS, r.systemNS, a.sel.Namespace)
			}
			return &Error{Pod: podRef, Network: a.label, Fix: fix,
				Problem: fmt.Sprintf("NetworkAttachmentDefinition %s is in another namespace and namespace isolation is on", a.label)}
		}
	}
	return nil
}

// mayUse reports whether namespace isolation lets a pod in podNS use a NAD in netNS. A per-pod
// default network may also come from the system namespace, where cluster networks live.
func (r *Resolver) mayUse(podNS, netNS string, asDefault bool) bool {
	return !r.isolation || netNS == podNS || r.global[netNS] || asDefault && netNS == r.systemNS
}

// spec resolves one planned attachment to its Spec.
func (r *Resolver) spec(podRef string, a attachment, runtimeConfig map[string]any) (delegate.Spec, error) {
	s := delegate.Spec{Ifname: a.ifname, Default: a.isDflt, Kind: delegate.KindCNI, DefaultRoute: a.sel.DefaultRoute}
	var (
		conf netConfig
		err  error
	)
	switch {
	case a.fromPod:
		conf, err = r.nadConfig(podRef, a, a.sel.Namespace, a.sel.Name, &s)
	case r.defaultNS != "":
		conf, err = r.nadConfig(podRef, a, r.defaultNS, r.defaultName, &s)
	default:
		conf, err = r.defaultConfig(podRef, a, &s)
	}
	if err != nil {
		return delegate.Spec{}, err
	}
	s.Config = conf.bytes
	s.Plugin = conf.plugin()
	if len(conf.types) == 1 && r.inProcess[conf.types[0]] {
		s.Kind = conf.types[0]
	}

	requested := a.sel.capabilityArgs()
	for _, c := range capabilities {
		if _, ok := requested[c.capability]; ok && !conf.caps[c.capability] {
			return delegate.Spec{}, &Error{Pod: podRef, Network: a.label,
				Problem: fmt.Sprintf("the pod asks for %q but no plugin of %s declares the %q capability", c.key, a.label, c.capability),
				Fix:     fmt.Sprintf(`add "capabilities": {%q: true} to a plugin that supports it, or remove %q from the annotation`, c.capability, c.key)}
		}
	}
	if a.isDflt && len(runtimeConfig) > 0 {
		args := maps.Clone(runtimeConfig)
		for k, v := range requested {
			if _, clash := args[k]; clash {
				return delegate.Spec{}, &Error{Pod: podRef, Network: a.label,
					Problem: fmt.Sprintf("the default network's selection sets runtimeConfig %q, which the kubelet also sets", k),
					Fix:     "remove it from the " + DefaultNetworkAnnot + " annotation; the pod spec already decides it"}
			}
			args[k] = v
		}
		requested = args
	}
	if len(requested) > 0 {
		s.CapabilityArgs = requested
	}
	return s, nil
}

// nadConfig fetches a NAD and loads its configuration.
func (r *Resolver) nadConfig(podRef string, a attachment, ns, name string, s *delegate.Spec) (netConfig, error) {
	ref := ns + "/" + name
	nad, err := r.nads.NAD(ns, name)
	if apierrors.IsNotFound(err) {
		fix := fmt.Sprintf("create NetworkAttachmentDefinition %s or select a network that exists", ref)
		if !a.fromPod {
			fix = fmt.Sprintf("create NetworkAttachmentDefinition %s or change loomd's default network", ref)
		}
		return netConfig{}, &Error{Pod: podRef, Network: a.label, Err: err, Fix: fix,
			Problem: fmt.Sprintf("NetworkAttachmentDefinition %s does not exist", ref)}
	}
	if err == nil && nad == nil {
		err = errors.New("lister returned no object and no error")
	}
	if err != nil {
		return netConfig{}, fmt.Errorf("resolve networks of pod %s: get NetworkAttachmentDefinition %s: %w", podRef, ref, err)
	}
	return r.loadNAD(podRef, a, ns, name, nad, s)
}

// loadNAD loads the configuration of a NAD: spec.config or, when that is empty, the file in
// ConfDir whose network name is the NAD's name.
func (r *Resolver) loadNAD(podRef string, a attachment, ns, name string, nad *nadv1.NetworkAttachmentDefinition, s *delegate.Spec) (netConfig, error) {
	ref := ns + "/" + name
	s.Network, s.NetworkUID = ref, string(nad.UID)
	s.Resource = strings.TrimSpace(nad.Annotations[ResourceNameAnnot])
	raw, source := []byte(nad.Spec.Config), "spec.config of NetworkAttachmentDefinition "+ref
	if strings.TrimSpace(nad.Spec.Config) == "" {
		file, data, err := confFile(r.confDir, name, false)
		if err != nil {
			return netConfig{}, &Error{Pod: podRef, Network: a.label, Err: err,
				Problem: fmt.Sprintf("NetworkAttachmentDefinition %s has no spec.config and %v", ref, err),
				Fix:     fmt.Sprintf("set spec.config of %s, or add a configuration file with \"name\": %q on every node", ref, name)}
		}
		raw, source = data, "configuration file "+file+" for NetworkAttachmentDefinition "+ref
	}
	conf, err := loadNetConfig(raw, name, r.cniVersion, a.sel.CNIArgs)
	if err != nil {
		return netConfig{}, &Error{Pod: podRef, Network: a.label, Err: err,
			Problem: fmt.Sprintf("%s is not a usable CNI configuration: %v", source, err),
			Fix:     "fix the configuration: a CNI plugin configuration with \"type\", or a configuration list with \"plugins\""}
	}
	return conf, nil
}

// defaultConfig resolves the configured default network when it is a bare name: the NAD of
// that name in the system namespace, else a configuration file.
func (r *Resolver) defaultConfig(podRef string, a attachment, s *delegate.Spec) (netConfig, error) {
	if checkName(r.defaultName) == nil {
		nad, err := r.nads.NAD(r.systemNS, r.defaultName)
		switch {
		case err == nil && nad != nil:
			return r.loadNAD(podRef, a, r.systemNS, r.defaultName, nad, s)
		case err != nil && !apierrors.IsNotFound(err):
			return netConfig{}, fmt.Errorf("resolve networks of pod %s: get NetworkAttachmentDefinition %s/%s: %w", podRef, r.systemNS, r.defaultName, err)
		}
	}
	file, raw, err := "built-in network "+r.defaultName, r.builtin[r.defaultName], error(nil)
	if raw == nil {
		file, raw, err = confFile(r.confDir, r.defaultName, true)
	}
	if err != nil {
		return netConfig{}, &Error{Pod: podRef, Network: a.label, Err: err,
			Problem: fmt.Sprintf("the default network is neither NetworkAttachmentDefinition %s/%s nor a configuration file: %v", r.systemNS, r.defaultName, err),
			Fix:     fmt.Sprintf("create one of them, or change loomd's default network %q", r.defaultNet)}
	}
	conf, err := loadNetConfig(raw, r.defaultName, r.cniVersion, nil)
	if err != nil {
		return netConfig{}, &Error{Pod: podRef, Network: a.label, Err: err,
			Problem: fmt.Sprintf("configuration file %s is not a usable CNI configuration: %v", file, err),
			Fix:     "fix the file: a CNI plugin configuration with \"type\", or a configuration list with \"plugins\""}
	}
	s.Network = conf.name
	return conf, nil
}

// capabilities maps the selection keys that need a plugin capability to that capability, which
// is also their runtimeConfig key (CNI conventions).
var capabilities = []struct{ key, capability string }{
	{"ips", "ips"},
	{"mac", "mac"},
	{"portMappings", "portMappings"},
	{"bandwidth", "bandwidth"},
	{"infiniband-guid", "infinibandGUID"},
}

// ipamClaimCapability carries ipam-claim-reference to plugins that declare it. It is not
// checked: OVN-Kubernetes, the reference consumer, reads the claim from the pod annotation.
const ipamClaimCapability = "ipamClaimReference"

// capabilityArgs returns the runtimeConfig a selection asks for, keyed by capability.
func (s Selection) capabilityArgs() map[string]any {
	args := map[string]any{}
	if len(s.IPs) > 0 {
		args["ips"] = s.IPs
	}
	if s.MAC != "" {
		args["mac"] = s.MAC
	}
	if len(s.PortMappings) > 0 {
		args["portMappings"] = s.PortMappings
	}
	if s.Bandwidth != nil {
		args["bandwidth"] = *s.Bandwidth
	}
	if s.InfinibandGUID != "" {
		args["infinibandGUID"] = s.InfinibandGUID
	}
	if s.IPAMClaimReference != "" {
		args[ipamClaimCapability] = s.IPAMClaimReference
	}
	return args
}
