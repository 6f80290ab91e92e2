namespace AddOnEvents.Ingress.Auth;

/// <summary>
/// A validly signed end-user token that no longer works, with a message for the caller. The challenge responds with
/// this message instead of the generic one, because the fix differs from that of a malformed or expired token.
/// </summary>
public sealed class TokenRejectedException(string message) : Exception(message);
