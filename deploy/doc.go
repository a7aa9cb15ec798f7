// Package deploy holds no code: its tests check the deployment files of
// the repository (the Dockerfile at the root, kubernetes/, systemd/) for
// consistency with each other and with the example server. It is a module
// of its own so that its YAML parser never enters the library's go.mod.
package deploy
