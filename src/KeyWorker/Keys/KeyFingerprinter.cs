using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Common.Crypto;
using Microsoft.Extensions.Options;

namespace AddOnEvents.KeyWorker.Keys;

/// <summary><c>Fingerprint:Key</c>: base64 of 32 random bytes that key the HMAC of stored provider keys.</summary>
public sealed class FingerprintOptions
{
    public const string SectionName = "Fingerprint";

    public string? Key { get; set; }
}

public sealed class FingerprintOptionsValidator : IValidateOptions<FingerprintOptions>
{
    public ValidateOptionsResult Validate(string? name, FingerprintOptions options) =>
        KeyFingerprinter.TryDecode(options.Key) is null
            ? ValidateOptionsResult.Fail("Fingerprint:Key is missing or invalid: set it to base64 of 32 random bytes (openssl rand -base64 32).")
            : ValidateOptionsResult.Success;
}

/// <summary>
/// HMAC-SHA256 of a provider key, so equal keys can be spotted across apps without storing a plain hash that a
/// database reader could test guesses against.
/// </summary>
public sealed class KeyFingerprinter(IOptions<FingerprintOptions> options)
{
    private readonly byte[] _key = TryDecode(options.Value.Key) ?? throw new InvalidOperationException("Fingerprint:Key is invalid.");

    public string Compute(ProviderKey providerKey)
    {
        byte[] plaintext = new byte[Encoding.UTF8.GetByteCount(providerKey.AsSpan())];
        try
        {
            Encoding.UTF8.GetBytes(providerKey.AsSpan(), plaintext);
            return "hmac-sha256:" + Convert.ToHexStringLower(HMACSHA256.HashData(_key, plaintext));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
        }
    }

    internal static byte[]? TryDecode(string? value)
    {
        byte[] buffer = new byte[32];
        return !string.IsNullOrWhiteSpace(value) && Convert.TryFromBase64String(value.Trim(), buffer, out int written) && written == 32
            ? buffer
            : null;
    }
}
