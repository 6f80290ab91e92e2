namespace AddOnEvents.Common.Upstream;

/// <summary>
/// The characters a provider key may have: those of an HTTP bearer credential (RFC 7235 token68). Some others, such as
/// a quote or a comma, make .NET reject the Authorization header with an exception whose message quotes the whole
/// header, key included.
/// </summary>
public static class ProviderKeyFormat
{
    public const string AllowedCharacters = "letters, digits and - . _ ~ + / (with = only at the end)";

    public static bool IsBearerCredential(ReadOnlySpan<char> key)
    {
        int end = key.Length;
        while (end > 0 && key[end - 1] == '=')
        {
            end--;
        }

        if (end == 0)
        {
            return false;
        }

        foreach (char c in key[..end])
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~' or '+' or '/'))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>
/// Thrown instead of the HTTP stack's own exception when a stored key cannot be sent as a bearer credential, so that
/// no message, log line or fault header ever carries the key.
/// </summary>
public sealed class UnusableProviderKeyException()
    : InvalidOperationException("The provider key contains characters that an Authorization header cannot carry.");
