// Package crds holds the CustomResourceDefinitions Loom's components rely on, as YAML
// manifests that `kubectl apply -f deployments/crds/` installs, and embeds them so that
// programs which set up a cluster (the simulated cluster in e2e/sim) install exactly the
// same definitions.
package crds

import "embed"

// Manifests holds every *.yaml file of this directory, one CustomResourceDefinition each.
//
//go:embed *.yaml
var Manifests embed.FS
