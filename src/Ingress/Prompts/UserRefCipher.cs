using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Encrypts the host's user id for the round trip through the bus, so workers and queue readers see only a pseudonym
/// while Ingress can still name the user to the host's webhook. The AES-256-GCM key derives from Auth:UserIdKey
/// (by default the token signing key), so references in flight stay readable across a signing key rotation.
/// </summary>
public sealed class UserRefCipher(IOptions<AuthOptions> options)
{
    private readonly byte[] _key = HKDF.DeriveKey(HashAlgorithmName.SHA256, options.Value.UserIdKeyBytes(), 32,
        info: "addonevents user reference v1"u8.ToArray());

    public byte[] Seal(string appId, string userId)
    {
        byte[] plaintext = Encoding.UTF8.GetBytes(userId);
        byte[] blob = new byte[12 + plaintext.Length + 16];
        RandomNumberGenerator.Fill(blob.AsSpan(0, 12));
        using var aes = new AesGcm(_key, 16);
        aes.Encrypt(blob.AsSpan(0, 12), plaintext, blob.AsSpan(12, plaintext.Length), blob.AsSpan(12 + plaintext.Length), Encoding.UTF8.GetBytes(appId));
        return blob;
    }

    /// <summary>Returns the user id, or null when the blob is not one of this Ingress deployment's for that app.</summary>
    public string? Open(string appId, byte[]? blob)
    {
        if (blob is null || blob.Length < 28)
        {
            return null;
        }

        byte[] plaintext = new byte[blob.Length - 28];
        try
        {
            using var aes = new AesGcm(_key, 16);
            aes.Decrypt(blob.AsSpan(0, 12), blob.AsSpan(12, plaintext.Length), blob.AsSpan(12 + plaintext.Length), plaintext, Encoding.UTF8.GetBytes(appId));
            return Encoding.UTF8.GetString(plaintext);
        }
        catch (CryptographicException)
        {
            return null;
        }
    }
}
