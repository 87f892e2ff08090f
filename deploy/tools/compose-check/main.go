// Command compose-check loads a Compose file the way `docker compose config` does, with
// compose-go (the library Docker Compose is built on): YAML parsing, interpolation, merge keys,
// validation against the Compose specification's JSON schema, normalisation and the
// consistency checks (every referenced service, network, volume and secret is defined). It
// also checks trine's own rules for deploy/compose.yaml. No container engine is needed.
//
//	compose-check [-env NAME=VALUE]... FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

type envFlags map[string]string

func (e envFlags) String() string { return "" }

func (e envFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want NAME=VALUE, got %q", v)
	}
	e[name] = value
	return nil
}

func main() {
	env := envFlags{}
	flag.Var(env, "env", "NAME=VALUE for interpolation (repeatable); nothing else is read from the environment")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-env NAME=VALUE]... FILE")
		os.Exit(2)
	}
	project, err := load(flag.Arg(0), env)
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
	problems := checkTrineRules(project)
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "compose-check: %s\n", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("compose-check: %s is valid: %d services (%s)\n",
		flag.Arg(0), len(project.Services), strings.Join(project.ServiceNames(), ", "))
}

func load(path string, env map[string]string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: data}},
		Environment: env,
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("trine", true)
		o.ResolvePaths = true
	})
}

// checkTrineRules returns what deploy/compose.yaml must satisfy beyond the specification.
func checkTrineRules(p *types.Project) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	want := []string{"gateway", "ml-0", "ml-1", "worker", "sandbox", "redis", "postgres"}
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			add("service %s is missing", name)
		}
	}
	for name, svc := range p.Services {
		if len(svc.Ports) > 0 && name != "gateway" {
			add("%s publishes a port: only the gateway may", name)
		}
		if svc.HealthCheck == nil && name != "worker" {
			add("%s has no healthcheck", name)
		}
		for dep, d := range svc.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				if ds, ok := p.Services[dep]; ok && (ds.HealthCheck == nil || ds.HealthCheck.Disable) {
					add("%s waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			}
		}
		for netName := range svc.Networks {
			if netName == "public" && name != "gateway" {
				add("%s is on the public network", name)
			}
		}
		if strings.HasPrefix(svc.Image, "trine/") || svc.Build != nil {
			if svc.Build == nil {
				add("%s uses a trine image but has no build section", name)
			} else if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
				add("%s: Dockerfile %s: %v", name, svc.Build.Dockerfile, err)
			}
			if !slices.Contains(svc.CapDrop, "ALL") {
				add("%s does not drop all capabilities", name)
			}
		}
	}
	if gw, ok := p.Services["gateway"]; ok {
		if len(gw.Ports) != 1 {
			add("gateway should publish exactly one port, has %d", len(gw.Ports))
		}
		for _, k := range []string{"TRINE_ML_URLS", "TRINE_SANDBOX_URL", "REDIS_URL", "TRINE_KEYS_FILE", "TRINE_INTERNAL_TOKEN_FILE"} {
			if v := gw.Environment[k]; v == nil || *v == "" {
				add("gateway: %s is not set", k)
			}
		}
	}
	for _, name := range []string{"ml-0", "ml-1", "worker"} {
		if svc, ok := p.Services[name]; ok {
			if v := svc.Environment["DATABASE_URL_FILE"]; v == nil || *v == "" {
				add("%s: DATABASE_URL_FILE is not set", name)
			}
		}
	}
	if w, ok := p.Services["worker"]; ok {
		if v := w.Environment["REDIS_URL"]; v == nil || *v == "" {
			add("worker: REDIS_URL is not set")
		}
	}
	if n, ok := p.Networks["backend"]; !ok || !n.Internal {
		add("the backend network must be internal")
	}
	return problems
}
