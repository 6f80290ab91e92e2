using System.Security.Cryptography;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Crypto;

/// <summary>A data key encrypted under a master key; <see cref="Blob"/> is opaque to everyone but the provider.</summary>
public sealed record WrappedDataKey(string MasterKeyId, byte[] Blob);

/// <summary>
/// Wraps and unwraps data keys under master keys (key-encryption keys). Callers never see a master key, so a
/// provider backed by an external KMS can replace the local one without changing them.
/// </summary>
public interface IMasterKeyProvider
{
    /// <summary>Id of the master key that new data keys are wrapped under.</summary>
    string CurrentKeyId { get; }

    ValueTask<WrappedDataKey> WrapAsync(ReadOnlyMemory<byte> dataKey, ReadOnlyMemory<byte> context, CancellationToken cancellationToken);

    /// <exception cref="CryptographicException">The wrapped key was changed, or the context or master key differ.</exception>
    ValueTask<byte[]> UnwrapAsync(WrappedDataKey wrapped, ReadOnlyMemory<byte> context, CancellationToken cancellationToken);
}

/// <summary>Master keys from configuration: <c>MasterKeys:CurrentKeyId</c> and <c>MasterKeys:Keys:{id}</c> (base64, 32 bytes).</summary>
public sealed class MasterKeyOptions
{
    public const string SectionName = "MasterKeys";

    public string? CurrentKeyId { get; set; }

    public Dictionary<string, string> Keys { get; set; } = new(StringComparer.Ordinal);
}

public sealed class MasterKeyOptionsValidator : IValidateOptions<MasterKeyOptions>
{
    public ValidateOptionsResult Validate(string? name, MasterKeyOptions options)
    {
        var failures = new List<string>();
        if (options.Keys.Count == 0)
        {
            failures.Add("MasterKeys:Keys is missing: set MasterKeys:Keys:<id> to a base64 string of 32 random bytes (openssl rand -base64 32).");
        }

        foreach (var (id, value) in options.Keys)
        {
            if (LocalMasterKeyProvider.TryDecodeKey(value) is null)
            {
                failures.Add($"MasterKeys:Keys:{id} is invalid: it must be base64 of exactly 32 bytes (openssl rand -base64 32).");
            }
        }

        if (string.IsNullOrWhiteSpace(options.CurrentKeyId))
        {
            failures.Add("MasterKeys:CurrentKeyId is missing: set it to the id of the master key that wraps new data keys.");
        }
        else if (!options.Keys.ContainsKey(options.CurrentKeyId))
        {
            failures.Add($"MasterKeys:CurrentKeyId names '{options.CurrentKeyId}', but MasterKeys:Keys:{options.CurrentKeyId} is not set.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

/// <summary>AES-256-GCM key wrapping with master keys held in process memory.</summary>
public sealed class LocalMasterKeyProvider : IMasterKeyProvider, IDisposable
{
    private const int NonceSize = 12;
    private const int TagSize = 16;
    private readonly Dictionary<string, byte[]> _keys;

    public LocalMasterKeyProvider(IOptions<MasterKeyOptions> options)
    {
        var value = options.Value;
        _keys = value.Keys.ToDictionary(
            pair => pair.Key,
            pair => TryDecodeKey(pair.Value) ?? throw new InvalidOperationException($"MasterKeys:Keys:{pair.Key} is invalid."),
            StringComparer.Ordinal);
        CurrentKeyId = value.CurrentKeyId ?? throw new InvalidOperationException("MasterKeys:CurrentKeyId is missing.");
    }

    public string CurrentKeyId { get; }

    public IReadOnlyCollection<string> KeyIds => _keys.Keys;

    public ValueTask<WrappedDataKey> WrapAsync(ReadOnlyMemory<byte> dataKey, ReadOnlyMemory<byte> context, CancellationToken cancellationToken)
    {
        byte[] blob = new byte[NonceSize + dataKey.Length + TagSize];
        var nonce = blob.AsSpan(0, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using (var aes = new AesGcm(_keys[CurrentKeyId], TagSize))
        {
            aes.Encrypt(nonce, dataKey.Span, blob.AsSpan(NonceSize, dataKey.Length), blob.AsSpan(NonceSize + dataKey.Length),
                WrapContext(CurrentKeyId, context.Span));
        }

        return ValueTask.FromResult(new WrappedDataKey(CurrentKeyId, blob));
    }

    public ValueTask<byte[]> UnwrapAsync(WrappedDataKey wrapped, ReadOnlyMemory<byte> context, CancellationToken cancellationToken)
    {
        if (!_keys.TryGetValue(wrapped.MasterKeyId, out var masterKey))
        {
            throw new CryptographicException(
                $"Master key '{wrapped.MasterKeyId}' is not configured; add MasterKeys:Keys:{wrapped.MasterKeyId} or rewrap the stored keys.");
        }

        if (wrapped.Blob.Length <= NonceSize + TagSize)
        {
            throw new CryptographicException("The wrapped data key is too short.");
        }

        int length = wrapped.Blob.Length - NonceSize - TagSize;
        byte[] dataKey = new byte[length];
        using var aes = new AesGcm(masterKey, TagSize);
        aes.Decrypt(wrapped.Blob.AsSpan(0, NonceSize), wrapped.Blob.AsSpan(NonceSize, length),
            wrapped.Blob.AsSpan(NonceSize + length), dataKey, WrapContext(wrapped.MasterKeyId, context.Span));
        return ValueTask.FromResult(dataKey);
    }

    public void Dispose()
    {
        foreach (var key in _keys.Values)
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    internal static byte[]? TryDecodeKey(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }

        byte[] buffer = new byte[32];
        return Convert.TryFromBase64String(value.Trim(), buffer, out int written) && written == 32 ? buffer : null;
    }

    private static byte[] WrapContext(string masterKeyId, ReadOnlySpan<byte> context)
    {
        byte[] prefix = System.Text.Encoding.UTF8.GetBytes($"data-key|{masterKeyId}|");
        byte[] result = new byte[prefix.Length + context.Length];
        prefix.CopyTo(result, 0);
        context.CopyTo(result.AsSpan(prefix.Length));
        return result;
    }
}
