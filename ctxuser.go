package fwdproxy

import "context"

// ctxKeyUser is the context key of the authenticated proxy user.
type ctxKeyUser struct{}

// withAuthUser returns ctx carrying the name of the user the proxy
// authenticated for this request or tunnel.
func withAuthUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, ctxKeyUser{}, user)
}

// authUser returns the authenticated user carried by ctx, or "".
func authUser(ctx context.Context) string {
	u, _ := ctx.Value(ctxKeyUser{}).(string)
	return u
}
