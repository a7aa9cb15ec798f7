package redisstore

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" {
		os.Exit(runReplica()) // a replica process of TestReplicaKilledFreesLeases
	}
	goleak.VerifyTestMain(m)
}
