package deploy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The example server's shutdown: requests and tunnels get shutdownGrace
// after SIGTERM, the log and telemetry flushGrace (examples/fwdproxy's
// constants, 8 s and 2 s). Whatever stops it must wait longer.
const serverStopTime = 10 * time.Second

// The parts of the Kubernetes objects the checks read. Fields not listed
// are ignored; a misspelt field checked here reads as missing and fails.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

type deployment struct {
	object
	Spec struct {
		Replicas *int     `json:"replicas"`
		Selector selector `json:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `json:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `json:"runAsNonRoot"`
		RunAsUser    *int  `json:"runAsUser"`
	} `json:"securityContext"`
	Containers []container `json:"containers"`
	Volumes    []struct {
		Name      string `json:"name"`
		ConfigMap *struct {
			Name string `json:"name"`
		} `json:"configMap"`
	} `json:"volumes"`
}

type container struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Env   []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	StartupProbe   *probe `json:"startupProbe"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `json:"seconds"`
			} `json:"sleep"`
			Exec    any `json:"exec"`
			HTTPGet any `json:"httpGet"`
		} `json:"preStop"`
	} `json:"lifecycle"`
	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `json:"runAsNonRoot"`
		Capabilities             struct {
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		SubPath   string `json:"subPath"`
	} `json:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"` // a name or a number
	} `json:"httpGet"`
	PeriodSeconds    int `json:"periodSeconds"`
	TimeoutSeconds   int `json:"timeoutSeconds"`
	FailureThreshold int `json:"failureThreshold"`
}

type service struct {
	object
	Spec struct {
		Selector map[string]string `json:"selector"`
		Ports    []struct {
			Name       string `json:"name"`
			Port       int    `json:"port"`
			TargetPort any    `json:"targetPort"`
		} `json:"ports"`
	} `json:"spec"`
}

type pdb struct {
	object
	Spec struct {
		MaxUnavailable any      `json:"maxUnavailable"`
		MinAvailable   any      `json:"minAvailable"`
		Selector       selector `json:"selector"`
	} `json:"spec"`
}

type hpa struct {
	object
	Spec struct {
		ScaleTargetRef struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicas int `json:"minReplicas"`
		MaxReplicas int `json:"maxReplicas"`
		Metrics     []struct {
			Type     string `json:"type"`
			Resource struct {
				Name   string `json:"name"`
				Target struct {
					AverageUtilization int `json:"averageUtilization"`
				} `json:"target"`
			} `json:"resource"`
		} `json:"metrics"`
	} `json:"spec"`
}

type configMap struct {
	object
	Data map[string]string `json:"data"`
}

type kustomization struct {
	Resources []string `json:"resources"`
}

// manifests reads every YAML document under kubernetes/, by kind.
type manifests struct {
	deployment deployment
	service    service
	pdb        pdb
	hpa        hpa
	configMaps map[string]configMap
	files      []string
}

func readManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{configMaps: map[string]configMap{}}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, filepath.Base(f))
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var o object
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s, document %d: %v", f, i, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s, document %d: apiVersion, kind and metadata.name are required", f, i)
			}
			if o.Metadata.Labels["app.kubernetes.io/name"] != "fwdproxy" {
				t.Errorf("%s: %s %s lacks the label app.kubernetes.io/name: fwdproxy", f, o.Kind, o.Metadata.Name)
			}
			seen[o.Kind]++
			var target any
			switch o.APIVersion + " " + o.Kind {
			case "apps/v1 Deployment":
				target = &m.deployment
			case "v1 Service":
				target = &m.service
			case "policy/v1 PodDisruptionBudget":
				target = &m.pdb
			case "autoscaling/v2 HorizontalPodAutoscaler":
				target = &m.hpa
			case "v1 ConfigMap":
				var cm configMap
				if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				m.configMaps[cm.Metadata.Name] = cm
				continue
			default:
				t.Fatalf("%s: unexpected %s %s", f, o.APIVersion, o.Kind)
			}
			if err := yaml.Unmarshal([]byte(doc), target); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"} {
		if seen[k] != 1 {
			t.Errorf("%d objects of kind %s, want 1", seen[k], k)
		}
	}
	return m
}

// TestKustomizationListsEveryManifest: kubectl apply -k applies them all.
func TestKustomizationListsEveryManifest(t *testing.T) {
	m := readManifests(t)
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(k.Resources))
	want := slices.Sorted(slices.Values(m.files))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want the files %v", got, want)
	}
}

// TestDeploymentProbesPortsResources checks the one container's probes,
// ports, resources, security and stopping against each other and the
// server.
func TestDeploymentProbesPortsResources(t *testing.T) {
	m := readManifests(t)
	d := m.deployment
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !labelsMatch(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Errorf("the selector %v does not select the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	}

	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["proxy"] == 0 || ports["admin"] == 0 || ports["proxy"] == ports["admin"] {
		t.Fatalf("container ports %v: want distinct proxy and admin ports", ports)
	}

	// Probes: HTTP on the admin port, /healthz for liveness (and startup),
	// /readyz for readiness.
	for _, p := range []struct {
		name, path string
		p          *probe
	}{
		{"readinessProbe", "/readyz", c.ReadinessProbe},
		{"livenessProbe", "/healthz", c.LivenessProbe},
		{"startupProbe", "/healthz", c.StartupProbe},
	} {
		if p.p == nil || p.p.HTTPGet == nil {
			t.Errorf("%s: missing, or not httpGet", p.name)
			continue
		}
		if p.p.HTTPGet.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, p.p.HTTPGet.Path, p.path)
		}
		if port := resolvePort(p.p.HTTPGet.Port, ports); port != ports["admin"] {
			t.Errorf("%s: port %v is not the admin port %d", p.name, p.p.HTTPGet.Port, ports["admin"])
		}
	}
	if r, l := c.ReadinessProbe, c.LivenessProbe; r != nil && l != nil {
		// Readiness reacts first: a draining or overloaded pod leaves the
		// endpoints long before liveness would restart it.
		if r.PeriodSeconds*max(1, r.FailureThreshold) >= l.PeriodSeconds*max(1, l.FailureThreshold) {
			t.Errorf("readiness fails after %ds, liveness after %ds: readiness must react first",
				r.PeriodSeconds*max(1, r.FailureThreshold), l.PeriodSeconds*max(1, l.FailureThreshold))
		}
		for _, p := range []*probe{r, l} {
			if p.TimeoutSeconds >= p.PeriodSeconds {
				t.Errorf("probe timeout %ds not below its period %ds", p.TimeoutSeconds, p.PeriodSeconds)
			}
		}
	}

	// Resources: CPU and memory requests (the HPA needs the CPU one), a
	// memory limit above the request, GOMEMLIMIT at 80-95 % of it.
	cpu, err := parseCPU(c.Resources.Requests["cpu"])
	if err != nil || cpu <= 0 {
		t.Errorf("cpu request %q: %v", c.Resources.Requests["cpu"], err)
	}
	memReq, err1 := parseBytes(c.Resources.Requests["memory"])
	memLim, err2 := parseBytes(c.Resources.Limits["memory"])
	if err1 != nil || err2 != nil || memReq <= 0 || memLim < memReq {
		t.Errorf("memory request %q and limit %q: want both, limit ≥ request (%v, %v)",
			c.Resources.Requests["memory"], c.Resources.Limits["memory"], err1, err2)
	}
	gml := ""
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			gml = e.Value
		}
	}
	if n, err := parseBytes(gml); err != nil || float64(n) < 0.8*float64(memLim) || float64(n) > 0.95*float64(memLim) {
		t.Errorf("GOMEMLIMIT %q: want 80-95 %% of the memory limit %d (%v)", gml, memLim, err)
	}

	// Security: non-root (the image's user), read-only root, nothing to
	// gain.
	if sc := spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user: runAsNonRoot true, runAsUser set")
	} else if uid := dockerfileUser(t); *sc.RunAsUser != uid {
		t.Errorf("runAsUser %d, but the image's USER is %d", *sc.RunAsUser, uid)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("capabilities must drop ALL")
	}

	// Stopping: a preStop pause, then SIGTERM and the server's drain, all
	// within the grace period.
	pre := c.Lifecycle.PreStop
	if pre == nil || (pre.Sleep == nil && pre.Exec == nil && pre.HTTPGet == nil) {
		t.Fatal("no preStop hook")
	}
	pause := 0
	if pre.Sleep != nil {
		pause = pre.Sleep.Seconds
	}
	grace := 30
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	if need := pause + int(serverStopTime.Seconds()) + 5; grace < need {
		t.Errorf("terminationGracePeriodSeconds %d < preStop %ds + the server's %v drain + 5s", grace, pause, serverStopTime)
	}

	// The configuration: -config names a file of a ConfigMap mounted as a
	// directory (a subPath mount would never see updates).
	cfgPath := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			cfgPath = v
		}
	}
	if cfgPath == "" {
		t.Fatal("no -config=FILE argument")
	}
	var cm *configMap
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != filepath.Dir(cfgPath) {
			continue
		}
		if vm.SubPath != "" {
			t.Errorf("volume %s is mounted with subPath: the kubelet never updates it", vm.Name)
		}
		for _, v := range spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				if x, ok := m.configMaps[v.ConfigMap.Name]; ok {
					cm = &x
				} else {
					t.Errorf("volume %s names ConfigMap %q, which is not among the manifests", v.Name, v.ConfigMap.Name)
				}
			}
		}
	}
	if cm == nil {
		t.Fatalf("no ConfigMap volume mounted at %s for -config=%s", filepath.Dir(cfgPath), cfgPath)
	}
	cfgText, ok := cm.Data[filepath.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Metadata.Name, filepath.Base(cfgPath))
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatalf("the configuration file in ConfigMap %s: %v", cm.Metadata.Name, err)
	}
	for key, port := range map[string]int{"listen": ports["proxy"], "admin-listen": ports["admin"]} {
		s, _ := cfg[key].(string)
		if got := addrPort(t, s); got != port {
			t.Errorf("configuration %s: %q, but the container port is %d", key, s, port)
		}
	}
}

// TestServicePDBAndHPAMatchTheDeployment checks selectors, ports and
// replica counts across the objects.
func TestServicePDBAndHPAMatchTheDeployment(t *testing.T) {
	m := readManifests(t)
	d := m.deployment
	podLabels := d.Spec.Template.Metadata.Labels
	ports := map[string]int{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}

	if !labelsMatch(m.service.Spec.Selector, podLabels) {
		t.Errorf("the Service selects %v, not the pods %v", m.service.Spec.Selector, podLabels)
	}
	if len(m.service.Spec.Ports) == 0 {
		t.Error("the Service has no ports")
	}
	for _, p := range m.service.Spec.Ports {
		if resolvePort(p.TargetPort, ports) != ports["proxy"] {
			t.Errorf("Service port %s targets %v, not the proxy port %d", p.Name, p.TargetPort, ports["proxy"])
		}
	}

	if !labelsMatch(m.pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the PodDisruptionBudget selects %v, not the pods %v", m.pdb.Spec.Selector.MatchLabels, podLabels)
	}
	h := m.hpa.Spec
	if h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != d.Metadata.Name {
		t.Errorf("the HPA scales %s %s, not Deployment %s", h.ScaleTargetRef.Kind, h.ScaleTargetRef.Name, d.Metadata.Name)
	}
	cpu := false
	for _, mt := range h.Metrics {
		if mt.Type == "Resource" && mt.Resource.Name == "cpu" && mt.Resource.Target.AverageUtilization > 0 {
			cpu = true
		}
	}
	if !cpu {
		t.Error("the HPA has no CPU utilisation target")
	}
	if h.MinReplicas < 2 || h.MaxReplicas < h.MinReplicas {
		t.Errorf("HPA replicas %d..%d: want at least 2, max ≥ min", h.MinReplicas, h.MaxReplicas)
	}
	if r := d.Spec.Replicas; r == nil || *r < h.MinReplicas || *r > h.MaxReplicas {
		t.Errorf("Deployment replicas %v outside the HPA's %d..%d", r, h.MinReplicas, h.MaxReplicas)
	}
	// The budget must leave pods serving at the HPA's minimum.
	if m.pdb.Spec.MinAvailable != nil {
		t.Error("use maxUnavailable in the PodDisruptionBudget, which follows the HPA's scaling")
	}
	if n, ok := m.pdb.Spec.MaxUnavailable.(float64); !ok || n < 1 || int(n) >= h.MinReplicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %v: want a number from 1 to below the HPA minimum %d", m.pdb.Spec.MaxUnavailable, h.MinReplicas)
	}
}

// TestDockerfile checks the image against the manifests: a static,
// trimmed build of the example server, a non-root user, the ports the
// Deployment declares.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(text, -1)
	if len(froms) < 2 || !strings.HasPrefix(froms[0][1], "golang:1.26") {
		t.Fatalf("FROM lines %v: want a golang:1.26 builder and a final stage", froms)
	}
	final := froms[len(froms)-1][1]
	if !strings.Contains(final, "distroless/static") && final != "scratch" {
		t.Errorf("final image %s: want distroless/static or scratch", final)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-ldflags '-s -w'", "examples/fwdproxy"} {
		if !strings.Contains(text, want) {
			t.Errorf("the build does not use %s", want)
		}
	}
	if uid := dockerfileUser(t); uid == 0 {
		t.Error("the image runs as root")
	}
	var exposed []int
	for _, m := range regexp.MustCompile(`(?m)^EXPOSE\s+(.+)$`).FindAllStringSubmatch(text, -1) {
		for f := range strings.FieldsSeq(m[1]) {
			n, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
			if err != nil {
				t.Fatalf("EXPOSE %s: %v", f, err)
			}
			exposed = append(exposed, n)
		}
	}
	m := readManifests(t)
	var declared []int
	for _, p := range m.deployment.Spec.Template.Spec.Containers[0].Ports {
		declared = append(declared, p.ContainerPort)
	}
	slices.Sort(exposed)
	slices.Sort(declared)
	if !slices.Equal(exposed, declared) {
		t.Errorf("the Dockerfile exposes %v, the Deployment declares %v", exposed, declared)
	}
	// The default command listens on those ports too, on every address.
	cmd := regexp.MustCompile(`(?m)^CMD\s+(.+)$`).FindStringSubmatch(text)
	if cmd == nil {
		t.Fatal("no CMD")
	}
	for _, flag := range []string{"-listen=", "-admin-listen="} {
		i := strings.Index(cmd[1], flag)
		if i < 0 {
			t.Errorf("CMD has no %s", flag)
			continue
		}
		v, _, _ := strings.Cut(cmd[1][i+len(flag):], `"`)
		if p := addrPort(t, v); !slices.Contains(exposed, p) {
			t.Errorf("CMD %s%s: port %d is not exposed", flag, v, p)
		}
	}
}

// TestSystemdUnit checks the unit's hardening and stopping.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("systemd/fwdproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sections := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			sections[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value in a section", n, line)
			}
			sections[section][k] = append(sections[section][k], v)
		}
	}
	svc := sections["Service"]
	if svc == nil || sections["Unit"] == nil || sections["Install"] == nil {
		t.Fatalf("sections %v: want Unit, Service, Install", sections)
	}
	get := func(k string) string {
		if v := svc[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	for k, want := range map[string]string{
		"DynamicUser":     "yes",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
		"KillSignal":      "SIGTERM",
	} {
		if got := get(k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if n, err := strconv.Atoi(get("LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%q: want at least 65536", get("LimitNOFILE"))
	}
	if r := get("ExecReload"); !strings.Contains(r, "-HUP") || !strings.Contains(r, "$MAINPID") {
		t.Errorf("ExecReload=%q: want a SIGHUP to $MAINPID", r)
	}
	if !strings.Contains(get("ExecStart"), "-config=") {
		t.Errorf("ExecStart=%q: want -config=FILE", get("ExecStart"))
	}
	d, err := time.ParseDuration(get("TimeoutStopSec"))
	if err != nil || d <= serverStopTime {
		t.Errorf("TimeoutStopSec=%q: want more than the server's %v drain", get("TimeoutStopSec"), serverStopTime)
	}
	if get("CapabilityBoundingSet") != "" || len(svc["CapabilityBoundingSet"]) == 0 {
		t.Error("CapabilityBoundingSet must be set empty")
	}
}

func labelsMatch(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// resolvePort returns the number of a port given by number or by name.
func resolvePort(p any, ports map[string]int) int {
	switch v := p.(type) {
	case float64:
		return int(v)
	case string:
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return ports[v]
	}
	return 0
}

// addrPort returns the port of a listen address such as ":8080".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("listen address %q: %v", addr, err)
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// dockerfileUser returns the numeric USER of the Dockerfile's final stage
// (nonroot is 65532 in distroless).
func dockerfileUser(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(string(b), -1)
	if len(users) == 0 {
		t.Fatal("the Dockerfile sets no USER")
	}
	u, _, _ := strings.Cut(users[len(users)-1][1], ":")
	if u == "nonroot" {
		return 65532
	}
	n, err := strconv.Atoi(u)
	if err != nil {
		t.Fatalf("USER %s: want a number or nonroot", u)
	}
	return n
}

// parseCPU reads a CPU quantity ("500m", "2") in millicores.
func parseCPU(s string) (int64, error) {
	if v, ok := strings.CutSuffix(s, "m"); ok {
		return strconv.ParseInt(v, 10, 64)
	}
	f, err := strconv.ParseFloat(s, 64)
	return int64(f * 1000), err
}

// parseBytes reads a Kubernetes memory quantity ("256Mi", "1G") or a
// GOMEMLIMIT ("460MiB") in bytes.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1},
	}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n * u.mult, err
		}
	}
	if s == "" {
		return 0, fmt.Errorf("empty quantity")
	}
	return strconv.ParseInt(s, 10, 64)
}
