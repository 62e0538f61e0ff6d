package deployments_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The images live in images/ at the repository's root, one level up; their build context is
// the root.
const repoRoot = ".."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, COPY, RUN...
	args string
}

// stage is a Dockerfile build stage.
type stage struct {
	name  string // the AS name, "" for an unnamed (final) stage
	insns []instruction
}

// dockerfile is a parsed Dockerfile: its global ARGs and its stages.
type dockerfile struct {
	path   string
	args   map[string]string // ARG defaults before the first FROM
	stages []stage
}

func parseDockerfile(t *testing.T, p string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{path: p, args: map[string]string{}}
	var cur *instruction
	var insns []instruction
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		line = strings.TrimSuffix(line, `\`)
		if cur == nil {
			cmd, args, _ := strings.Cut(line, " ")
			cur = &instruction{line: n, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + strings.TrimSpace(line)
		}
		if !cont {
			insns = append(insns, *cur)
			cur = nil
		}
	}
	for _, in := range insns {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := stage{}
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				s.name = f[len(f)-1]
			}
			df.stages = append(df.stages, s)
		case len(df.stages) == 0:
			if in.cmd == "ARG" {
				name, value, _ := strings.Cut(in.args, "=")
				df.args[name] = value
			}
		default:
			last := &df.stages[len(df.stages)-1]
			last.insns = append(last.insns, in)
		}
	}
	if len(df.stages) == 0 {
		t.Fatalf("%s: no FROM", p)
	}
	return df
}

// copyArgs splits a COPY instruction into its --from stage, sources and destination.
func copyArgs(in instruction) (from string, srcs []string, dst string) {
	f := strings.Fields(in.args)
	for len(f) > 0 && strings.HasPrefix(f[0], "--") {
		if v, ok := strings.CutPrefix(f[0], "--from="); ok {
			from = v
		}
		f = f[1:]
	}
	if len(f) < 2 {
		return from, nil, ""
	}
	return from, f[:len(f)-1], f[len(f)-1]
}

var goBuild = regexp.MustCompile(`go build .*-o (\S+) ((?:\./\S+ ?)+)`)

// built returns the binaries each stage's go build writes: output path → package directory.
func (df dockerfile) built() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range df.stages {
		for _, in := range s.insns {
			if in.cmd != "RUN" {
				continue
			}
			for _, m := range goBuild.FindAllStringSubmatch(in.args, -1) {
				if out[s.name] == nil {
					out[s.name] = map[string]string{}
				}
				for _, pkg := range strings.Fields(m[2]) {
					out[s.name][path.Join(m[1], path.Base(pkg))] = pkg
				}
			}
		}
	}
	return out
}

// finalFiles returns the files the final stage copies in, by their path in the image; a
// directory copied whole is listed as the directory.
func (df dockerfile) finalFiles() []string {
	var files []string
	for _, in := range df.stages[len(df.stages)-1].insns {
		if in.cmd != "COPY" {
			continue
		}
		_, srcs, dst := copyArgs(in)
		for _, src := range srcs {
			if strings.HasSuffix(dst, "/") && !strings.HasSuffix(src, "/") {
				files = append(files, dst+path.Base(src))
			} else {
				files = append(files, strings.TrimSuffix(dst, "/"))
			}
		}
	}
	return files
}

// user returns the final stage's USER.
func (df dockerfile) user() string {
	u := ""
	for _, in := range df.stages[len(df.stages)-1].insns {
		if in.cmd == "USER" {
			u = in.args
		}
	}
	return u
}

// TestDockerfiles checks that each Dockerfile builds from what the repository has: every
// COPY source exists in the build context (the root) or in an earlier stage, every package
// built is a main package, the Go version is go.mod's, and the images hold what the
// manifests run.
func TestDockerfiles(t *testing.T) {
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	goVersion := string(m[1])

	images := map[string]dockerfile{}
	for _, name := range []string{"loomd", "loom-controller"} {
		df := parseDockerfile(t, filepath.Join(repoRoot, "images", name, "Dockerfile"))
		images[name] = df
		t.Run(name, func(t *testing.T) {
			if v := df.args["GO_VERSION"]; v != goVersion {
				t.Errorf("GO_VERSION %q, go.mod says go %s", v, goVersion)
			}
			built := df.built()
			stages := map[string]bool{}
			for _, s := range df.stages {
				for _, in := range s.insns {
					if in.cmd == "ADD" {
						t.Errorf("line %d: ADD: use COPY, or a RUN that checks what it downloads", in.line)
					}
					if in.cmd != "COPY" {
						continue
					}
					from, srcs, _ := copyArgs(in)
					for _, src := range srcs {
						switch {
						case from == "":
							if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
								t.Errorf("line %d: COPY %s: not in the build context (the repository's root): %v", in.line, src, err)
							}
						case !stages[from]:
							t.Errorf("line %d: COPY --from=%s: no earlier stage of that name", in.line, from)
						case built[from] != nil && !strings.HasSuffix(src, "/") && built[from][src] == "":
							t.Errorf("line %d: COPY --from=%s %s: stage %s builds %v", in.line, from, src, from, slices.Collect(mapKeys(built[from])))
						}
					}
				}
				if s.name != "" {
					stages[s.name] = true
				}
			}
			if len(built) == 0 {
				t.Error("no go build")
			}
			for _, outs := range built {
				for _, pkg := range outs {
					b, err := exec.Command("go", "list", "-C", repoRoot, "-f", "{{.Name}}", pkg).Output()
					if err != nil || strings.TrimSpace(string(b)) != "main" {
						t.Errorf("go build %s: not a main package of the repository (%v: %s)", pkg, err, b)
					}
				}
			}
		})
	}

	t.Run("WhatTheManifestsRun", func(t *testing.T) {
		var ds appsv1.DaemonSet
		readObject(t, "base/loomd.yaml", "DaemonSet", &ds)
		loomd := images["loomd"].finalFiles()
		spec := ds.Spec.Template.Spec
		install := spec.InitContainers[0].Command
		for _, f := range []string{spec.Containers[0].Command[0], install[0], path.Join(install[1], "loom"), path.Join(install[1], "loom-ipam")} {
			if !slices.Contains(loomd, f) {
				t.Errorf("the DaemonSet runs %s, which images/loomd/Dockerfile does not put in the image (it has %v)", f, loomd)
			}
		}
		if !slices.Contains(loomd, install[1]) {
			t.Errorf("images/loomd/Dockerfile copies no CNI plugins into %s, which install-cni installs", install[1])
		}

		var d appsv1.Deployment
		readObject(t, "base/loom-controller.yaml", "Deployment", &d)
		ctl := images["loom-controller"]
		if f := d.Spec.Template.Spec.Containers[0].Command[0]; !slices.Contains(ctl.finalFiles(), f) {
			t.Errorf("the Deployment runs %s, which images/loom-controller/Dockerfile does not put in the image", f)
		}
		uid := d.Spec.Template.Spec.SecurityContext.RunAsUser
		if want := strconv.FormatInt(*uid, 10) + ":" + strconv.FormatInt(*uid, 10); ctl.user() != want {
			t.Errorf("images/loom-controller/Dockerfile's USER %q, the Deployment runs as %s", ctl.user(), want)
		}
	})
}

// readObject reads the object of kind from a multi-document manifest file.
func readObject(t *testing.T, file, kind string, out any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Kind == kind {
			if err := yaml.UnmarshalStrict([]byte(doc), out); err != nil {
				t.Fatalf("%s: %s: %v", file, kind, err)
			}
			return
		}
	}
	t.Fatalf("%s has no %s", file, kind)
}

// TestInstallCNI runs the init container's script on directories standing in for the image's
// and the host's.
func TestInstallCNI(t *testing.T) {
	script := filepath.Join(repoRoot, "images", "loomd", "install-cni.sh")
	src, dst := t.TempDir(), t.TempDir()
	for _, name := range []string{"loom", "loom-ipam", "macvlan"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte("#!/bin/sh\necho "+name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An older macvlan is there already, and the runtime has a configuration of its own.
	if err := os.WriteFile(filepath.Join(dst, "macvlan"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command("sh", append([]string{script}, args...)...).CombinedOutput()
		return string(out), err
	}
	for range 2 { // a second run (the init container restarted) changes nothing
		out, err := run(src, dst)
		if err != nil || !strings.Contains(out, "installed 3 binaries") {
			t.Fatalf("install-cni: %v: %s", err, out)
		}
		entries, err := os.ReadDir(dst)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dst, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o755 || !strings.Contains(string(b), "echo "+e.Name()) {
				t.Errorf("%s: mode %v, content %q: want the new binary, executable", e.Name(), fi.Mode(), b)
			}
		}
		if want := []string{"loom", "loom-ipam", "macvlan"}; !slices.Equal(names, want) {
			t.Errorf("%s holds %v, want %v and nothing else (no temporary files, no configuration)", dst, names, want)
		}
	}
	if out, err := run(src, filepath.Join(dst, "missing")); err == nil {
		t.Errorf("install-cni into a missing directory succeeded: %s", out)
	}
	if out, err := run(t.TempDir(), dst); err == nil {
		t.Errorf("install-cni from an empty directory succeeded: %s", out)
	}
}

// TestMakeImages runs the Makefile's images target: as `make -n`, with an engine that
// answers (a stand-in recording its arguments), and with one that does not.
func TestMakeImages(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make in $PATH")
	}
	runMake := func(args ...string) (string, error) {
		out, err := exec.Command("make", append([]string{"-s", "-C", repoRoot, "images"}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := runMake("-n", "VERSION=v0.0.0-test")
	if err != nil {
		t.Fatalf("make -n images: %v\n%s", err, out)
	}
	if !strings.Contains(out, "build -f images/$image/Dockerfile -t loom/$image:v0.0.0-test .") {
		t.Errorf("make -n images does not build images/*/Dockerfile tagged with VERSION:\n%s", out)
	}

	dir := t.TempDir()
	record := filepath.Join(dir, "calls")
	engine := filepath.Join(dir, "engine")
	if err = os.WriteFile(engine, []byte("#!/bin/sh\necho \"$*\" >>"+record+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err = runMake("CONTAINER_ENGINE="+engine, "VERSION=v0.0.0-test"); err != nil {
		t.Fatalf("make images with an engine: %v\n%s", err, out)
	}
	calls, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := "info\n" +
		"build -f images/loomd/Dockerfile -t loom/loomd:v0.0.0-test .\n" +
		"build -f images/loom-controller/Dockerfile -t loom/loom-controller:v0.0.0-test .\n"
	if string(calls) != want {
		t.Errorf("the engine was called with\n%s\nwant\n%s", calls, want)
	}

	dead := filepath.Join(dir, "dead")
	if err = os.WriteFile(dead, []byte("#!/bin/sh\necho 'Cannot connect to the daemon' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = runMake("CONTAINER_ENGINE=" + dead)
	if err != nil || !strings.Contains(out, "no container engine answers ("+dead+" info failed): skipping make images") {
		t.Errorf("make images without an engine: %v, %q: want success and a message saying nothing was built", err, out)
	}
}
