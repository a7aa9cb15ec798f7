// Package redisstore keeps what fwdproxy replicas share in Redis:
// certificates minted for interception, rate limits, byte quotas and
// concurrency leases (tunnels). It is a module of its own, so that the core
// library never depends on Redis; a proxy without it keeps all of this in
// memory.
//
// Open returns a Store on a redis:// or rediss:// URL. It implements the
// interfaces of interfaces.go, which the core will define:
//
//   - CertStore and CertLocker: PEM in Redis with a TTL a margin short of
//     the leaf's validity and an in-memory cache in front; one replica mints
//     a host's certificate while the others wait (SET NX PX lock, polled).
//   - RateLimitStore: a GCRA in one Lua script, one round trip per decision,
//     several decisions pipelined in one (AllowMany); and RateTaker: Take
//     takes up to n events of the same GCRA in one round trip, which a
//     Proxy spends locally (batches of 100 ms of the rate, so the limit
//     holds across replicas within one batch per replica).
//   - QuotaStore: usage in fixed windows aligned to the Unix epoch, one round
//     trip per add; ByteCounter batches a transfer's bytes (64 KiB or
//     100 ms) and tells when the quota is reached.
//   - LeaseStore: a sorted set per key (member the lease id, score its
//     expiry), so a replica killed with -9 frees its leases within their
//     ttl; Lease renews one until it is released.
//
// No call waits for Redis longer than the Store's timeout (50 ms by
// default). When Redis fails or is slow, each kind of decision follows its
// Policy: FailOpen decides with a local in-memory fallback limit, FailClosed
// refuses. After a few consecutive failures the Store marks Redis down,
// logs it once, stops calling it, and probes it in the background until it
// answers; then it logs once that it is back. Stats gives the counters for
// metrics.
//
// All scripts take their clock from Redis (TIME), so replicas whose clocks
// differ share one. The Store is for a single Redis server (or a primary
// with failover behind one address), not Redis Cluster: the certificate
// scripts use two keys that Cluster could place on different nodes.
package redisstore
