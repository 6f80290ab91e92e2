using System.Security.Cryptography;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Crypto;

/// <summary>
/// The P-256 key pair that carries provider keys from Ingress to KeyWorker. Ingress sets <see cref="PublicKey"/>
/// (base64 SubjectPublicKeyInfo); KeyWorker sets <see cref="PrivateKey"/> (base64 PKCS#8).
/// </summary>
public sealed class SealingOptions
{
    public const string SectionName = "Sealing";

    public string? KeyId { get; set; }

    public string? PublicKey { get; set; }

    public string? PrivateKey { get; set; }
}

/// <summary>Checks the half of the sealing key pair that one service needs, naming the setting that is wrong.</summary>
public sealed class SealingOptionsValidator(bool requirePrivateKey) : IValidateOptions<SealingOptions>
{
    public ValidateOptionsResult Validate(string? name, SealingOptions options)
    {
        var failures = new List<string>();
        if (string.IsNullOrWhiteSpace(options.KeyId))
        {
            failures.Add("Sealing:KeyId is missing: set it to the id of the sealing key pair, the same in Ingress and KeyWorker.");
        }

        string setting = requirePrivateKey ? "Sealing:PrivateKey" : "Sealing:PublicKey";
        string? value = requirePrivateKey ? options.PrivateKey : options.PublicKey;
        if (string.IsNullOrWhiteSpace(value))
        {
            failures.Add($"{setting} is missing: set it to the base64 DER of a P-256 key (see the README's configuration section).");
        }
        else
        {
            try
            {
                using var key = SealingKeys.Load(options, requirePrivateKey);
            }
            catch (Exception ex) when (ex is FormatException or CryptographicException or ArgumentException)
            {
                failures.Add($"{setting} is invalid: it must be the base64 DER of a P-256 {(requirePrivateKey ? "PKCS#8 private" : "SubjectPublicKeyInfo public")} key.");
            }
        }

        if (!requirePrivateKey && !string.IsNullOrWhiteSpace(options.PrivateKey))
        {
            failures.Add("Sealing:PrivateKey is set, but this service must hold only the public key: remove it.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

public static class SealingKeys
{
    /// <summary>Loads the configured key; the caller disposes it.</summary>
    public static ECDiffieHellman Load(SealingOptions options, bool privateKey)
    {
        var key = ECDiffieHellman.Create();
        try
        {
            if (privateKey)
            {
                key.ImportPkcs8PrivateKey(Convert.FromBase64String(options.PrivateKey!.Trim()), out _);
            }
            else
            {
                key.ImportSubjectPublicKeyInfo(Convert.FromBase64String(options.PublicKey!.Trim()), out _);
            }

            if (key.KeySize != 256)
            {
                throw new CryptographicException($"The sealing key has {key.KeySize} bits; a P-256 key is required.");
            }

            return key;
        }
        catch
        {
            key.Dispose();
            throw;
        }
    }
}
