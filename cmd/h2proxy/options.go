package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/h2proxy/h2proxy/certs"
	"github.com/h2proxy/h2proxy/proxy"
)

// options are the settings from the command line and the config file. A
// config file key is the flag's name without dashes in front, so every
// flag has a key and the two can never drift apart.
type options struct {
	config         string
	listen         string
	plainListen    string
	adminListen    string
	certFile       string
	keyFile        string
	dataDir        string
	allowPrivate   bool
	allowPorts     string
	upstreamCA     string
	proxyProtocol  bool
	trustedProxies string
	logFormat      string
	logLevel       string
	drainTimeout   time.Duration

	domains   stringList
	routes    stringList
	acmeEmail string
	acmeCA    string

	authFile            string
	probeResistance     bool
	probeDomain         string
	allowDest           string
	denyDest            string
	maxTunnelsPerClient int
	idleTimeout         time.Duration
	headerTimeout       time.Duration
	dialTimeout         time.Duration
	maxHeaderBytes      int
	maxStreams          int
	dnsServer           string

	// users holds per-user destination policies, from the config file's
	// "users" key (structured, so it has no flag).
	users map[string]userPolicy

	values map[string]string // every setting's value as text, for reload diffs
}

// userPolicy is one entry of the config file's "users" key: it replaces
// the global destination rules for that user.
type userPolicy struct {
	AllowPrivate bool     `yaml:"allow-private"`
	AllowPorts   string   `yaml:"allow-ports"`
	AllowDest    []string `yaml:"allow-dest"`
	DenyDest     []string `yaml:"deny-dest"`
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("h2proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "YAML config file; its keys are these flags' names; flags given on the command line win")
	fs.StringVar(&o.listen, "listen", defaultListen(), "TLS listen address (h2 and http/1.1); default :8443, or :$PORT when PORT is set")
	fs.StringVar(&o.plainListen, "plain-listen", "", "cleartext listen address (http/1.1 and h2c) for use behind a TLS-terminating load balancer")
	fs.StringVar(&o.adminListen, "admin-listen", "", "address for /healthz, /readyz and /metrics, e.g. 127.0.0.1:9090 (off when empty)")
	fs.StringVar(&o.certFile, "cert", "", "certificate chain PEM file (with --key) instead of the local CA")
	fs.StringVar(&o.keyFile, "key", "", "private key PEM file (with --cert)")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the local CA and other state")
	fs.BoolVar(&o.allowPrivate, "allow-private", false, "allow loopback, private and link-local destinations (development only)")
	fs.StringVar(&o.allowPorts, "allow-ports", proxy.DefaultPorts, "destination ports allowed, e.g. 80,443,1025-65535")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "PEM file of a CA to trust for TLS to origins, beside the system roots")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "require a PROXY protocol v1/v2 header on every connection (from --trusted-proxies only)")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of load balancers allowed to send PROXY headers")
	fs.StringVar(&o.logFormat, "log-format", "", "json or console (default: console on a terminal, else json)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long open requests and tunnels may finish")
	fs.Var(&o.routes, "route", "HOST=URL: serve requests for HOST from the backend URL, WebSockets included (gateway mode; repeatable)")
	fs.Var(&o.domains, "domain", "get a certificate for this name by ACME (repeatable); challenges are answered on --listen (TLS-ALPN-01) and --plain-listen (HTTP-01)")
	fs.StringVar(&o.acmeEmail, "acme-email", "", "contact address for the ACME account")
	fs.StringVar(&o.acmeCA, "acme-ca", certs.LetsEncryptProduction, "ACME directory URL")
	fs.StringVar(&o.authFile, "auth-file", "", "htpasswd file (bcrypt entries) of proxy users; reloaded when it changes; off when empty")
	fs.BoolVar(&o.probeResistance, "probe-resistance", false, "answer unauthenticated proxy requests like a plain web server instead of 407 (needs --auth-file)")
	fs.StringVar(&o.probeDomain, "probe-domain", "", "with --probe-resistance: a secret host name whose requests get the 407 that lets browsers log in")
	fs.StringVar(&o.allowDest, "allow-dest", "", "comma-separated CIDRs, hosts or *.domains reachable even if private")
	fs.StringVar(&o.denyDest, "deny-dest", "", "comma-separated CIDRs, hosts or *.domains always refused")
	fs.IntVar(&o.maxTunnelsPerClient, "max-tunnels-per-client", 0, "open tunnels allowed per client address, 429 past it (0: no cap)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close tunnels idle in both directions this long (0: never)")
	fs.DurationVar(&o.headerTimeout, "header-timeout", 10*time.Second, "time allowed for the TLS handshake and a request head (slowloris guard)")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "time allowed for DNS and connecting to a destination (504 past it)")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", 64<<10, "largest request head accepted (HTTP/1.1 head, HTTP/2 header list)")
	fs.StringVar(&o.dnsServer, "dns-server", "", "resolve destinations with this DNS server (HOST:PORT) instead of the system's")
	fs.IntVar(&o.maxStreams, "max-concurrent-streams", 250, "concurrent streams (tunnels) per HTTP/2 connection")
	return fs
}

// parseOptions reads the command line and then the config file it names;
// a flag given on the command line overrides the file.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: ca, trust, passwd, health)", fs.Arg(0))
	}
	if o.config != "" {
		onCLI := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { onCLI[f.Name] = true })
		if err := applyConfigFile(fs, o, o.config, onCLI); err != nil {
			return nil, err
		}
	}
	o.values = map[string]string{"users": fmt.Sprint(o.users)}
	fs.VisitAll(func(f *flag.Flag) { o.values[f.Name] = f.Value.String() })
	return o, o.check()
}

// applyConfigFile sets every flag named by a key of the YAML file at path,
// except those already set on the command line. Unknown keys are errors.
func applyConfigFile(fs *flag.FlagSet, o *options, path string, onCLI map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if key == "users" {
			if err := decodeUsers(doc[key], &o.users); err != nil {
				return fmt.Errorf("config file %s: key \"users\": %w", path, err)
			}
			continue
		}
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the flag names, and users: %s)", path, key, flagNames(fs))
		}
		if onCLI[key] {
			continue
		}
		if err := fs.Set(key, yamlValue(doc[key])); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// decodeUsers re-decodes the generic YAML value of "users" strictly, so a
// misspelt per-user key is an error too.
func decodeUsers(v any, out *map[string]userPolicy) error {
	raw, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// yamlValue renders a YAML value as flag text: lists become comma lists.
func yamlValue(v any) string {
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, e := range list {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

func flagNames(fs *flag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			names = append(names, f.Name)
		}
	})
	return strings.Join(names, ", ")
}

// check validates what flag parsing cannot, naming the flag at fault.
func (o *options) check() error {
	if (o.certFile == "") != (o.keyFile == "") {
		return errors.New("--cert and --key go together: give both or neither")
	}
	if len(o.domains) > 0 && o.certFile != "" {
		return errors.New("--domain (ACME) and --cert/--key are two certificate sources: give one")
	}
	for name, addr := range map[string]string{"listen": o.listen, "plain-listen": o.plainListen, "admin-listen": o.adminListen, "dns-server": o.dnsServer} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			return fmt.Errorf("--%s %q: want HOST:PORT or :PORT", name, addr)
		}
	}
	if o.proxyProtocol && o.trustedProxies == "" {
		return errors.New("--proxy-protocol needs --trusted-proxies CIDR,... (the load balancers' addresses)")
	}
	for _, c := range o.trustedList() {
		if _, _, err := net.ParseCIDR(c); err != nil && net.ParseIP(c) == nil {
			return fmt.Errorf("--trusted-proxies: %q is not a CIDR or an IP address", c)
		}
	}
	for name, d := range map[string]time.Duration{"drain-timeout": o.drainTimeout, "idle-timeout": o.idleTimeout, "header-timeout": o.headerTimeout, "dial-timeout": o.dialTimeout} {
		if d < 0 {
			return fmt.Errorf("--%s must not be negative", name)
		}
	}
	if o.probeResistance && o.authFile == "" {
		return errors.New("--probe-resistance needs --auth-file: without users there is nothing to hide behind")
	}
	if o.users != nil && o.authFile == "" {
		return errors.New("config key users needs --auth-file (per-user policies apply to authenticated users)")
	}
	if o.maxTunnelsPerClient < 0 || o.maxHeaderBytes < 1024 || o.maxStreams < 1 {
		return errors.New("--max-tunnels-per-client must be >= 0, --max-header-bytes >= 1024, --max-concurrent-streams >= 1")
	}
	if _, _, err := o.policies(); err != nil {
		return err
	}
	if _, err := o.parsedRoutes(); err != nil {
		return err
	}
	return nil
}

func (o *options) parsedRoutes() ([]proxy.Route, error) {
	var routes []proxy.Route
	for _, r := range o.routes {
		rt, err := proxy.ParseRoute(r)
		if err != nil {
			return nil, fmt.Errorf("--route: %w", err)
		}
		routes = append(routes, rt)
	}
	return routes, nil
}

// routeHosts are the route host names, which the certificate must cover.
func (o *options) routeHosts() []string {
	routes, _ := o.parsedRoutes()
	var hosts []string
	for _, r := range routes {
		hosts = append(hosts, r.Host)
	}
	return hosts
}

// policies builds the global and per-user destination policies.
func (o *options) policies() (proxy.Policy, map[string]proxy.Policy, error) {
	global, err := buildPolicy("--", o.allowPrivate, o.allowPorts, splitList(o.allowDest), splitList(o.denyDest))
	if err != nil {
		return proxy.Policy{}, nil, err
	}
	users := map[string]proxy.Policy{}
	for name, u := range o.users {
		ports := u.AllowPorts
		if ports == "" {
			ports = o.allowPorts
		}
		if users[name], err = buildPolicy("users."+name+".", u.AllowPrivate, ports, u.AllowDest, u.DenyDest); err != nil {
			return proxy.Policy{}, nil, err
		}
	}
	return global, users, nil
}

func buildPolicy(prefix string, allowPrivate bool, ports string, allow, deny []string) (proxy.Policy, error) {
	p := proxy.Policy{AllowPrivate: allowPrivate}
	var err error
	if p.Ports, err = proxy.ParsePorts(ports); err != nil {
		return p, fmt.Errorf("%sallow-ports: %w", prefix, err)
	}
	if p.Allow, err = proxy.ParseRules(allow); err != nil {
		return p, fmt.Errorf("%sallow-dest: %w", prefix, err)
	}
	if p.Deny, err = proxy.ParseRules(deny); err != nil {
		return p, fmt.Errorf("%sdeny-dest: %w", prefix, err)
	}
	return p, nil
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (o *options) trustedList() []string { return splitList(o.trustedProxies) }

// changed lists the flags whose values differ between o and n.
func (o *options) changed(n *options) []string {
	var names []string
	for name, v := range o.values {
		if n.values[name] != v {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func defaultListen() string {
	if p := os.Getenv("PORT"); p != "" {
		return ":" + p
	}
	return ":8443"
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "h2proxy")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "h2proxy")
	}
	return "h2proxy-data"
}

// stringList is a repeatable flag; a comma list (from the config file's
// YAML list) adds several values at once.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, splitList(v)...)
	return nil
}
