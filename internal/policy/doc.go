// Package policy holds the mechanics of the proxy's access control, the
// pieces that decide whether a request may go where it asks:
//
//   - host patterns (Pattern) and the one matcher of hosts and address
//     ranges (Matcher), which the access rules (Rules) and the interception
//     bypass both use;
//   - the destination address classifier of the private-address guard
//     (Classify, Class, PrefixSet) with its table of ranges and their
//     reasons, and ParseHost, which reads a numeric host as the address a
//     browser or resolver would use;
//   - Proxy-Authorization Basic credentials (ParseBasic);
//   - a per-client rate limiter (RateLimiter).
//
// It holds no package-level mutable state: every value is built by its
// constructor and is safe for concurrent use, and the package-level tables
// (the classifier's ranges and class names) are filled at init and only
// read. It grew from the former
// packages internal/acl and internal/netguard.
package policy
