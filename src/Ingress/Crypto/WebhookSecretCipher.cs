using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Crypto;

/// <summary>
/// AES-256-GCM encryption of an app's webhook signing secret for storage in the database, so that a database dump
/// alone cannot forge webhooks. The key derives by HKDF-SHA256 from Auth:UserIdKey, which is never in the database
/// and must not change, so stored secrets stay readable across a token signing key rotation and no new setting is
/// needed. The app id is the associated data, so a sealed secret copied into another app's document does not open.
/// </summary>
public sealed class WebhookSecretCipher
{
    private const int NonceSize = 12;
    private const int TagSize = 16;

    private readonly byte[] _key;

    public WebhookSecretCipher(IOptions<AuthOptions> options)
        : this(options.Value.UserIdKeyBytes())
    {
    }

    /// <summary>Creates a cipher whose key derives from <paramref name="userIdKey"/>, the bytes of Auth:UserIdKey.</summary>
    public WebhookSecretCipher(byte[] userIdKey)
    {
        _key = HKDF.DeriveKey(HashAlgorithmName.SHA256, userIdKey, 32, info: "addonevents webhook secret v1"u8.ToArray());
    }

    /// <summary>Encrypts the secret under a fresh random nonce. The result is nonce, ciphertext and tag, in that order.</summary>
    public byte[] Seal(string appId, string secret)
    {
        byte[] plaintext = Encoding.UTF8.GetBytes(secret);
        byte[] sealedSecret = new byte[NonceSize + plaintext.Length + TagSize];
        var nonce = sealedSecret.AsSpan(0, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(_key, TagSize);
        aes.Encrypt(nonce, plaintext, sealedSecret.AsSpan(NonceSize, plaintext.Length), sealedSecret.AsSpan(NonceSize + plaintext.Length),
            Encoding.UTF8.GetBytes(appId));
        return sealedSecret;
    }

    /// <summary>
    /// Decrypts a secret that <see cref="Seal"/> produced for the same app. Returns null when it does not open, because it
    /// was sealed for another app, under another key, or changed since.
    /// </summary>
    public string? Open(string appId, byte[] sealedSecret)
    {
        if (sealedSecret.Length < NonceSize + TagSize)
        {
            return null;
        }

        int plaintextLength = sealedSecret.Length - NonceSize - TagSize;
        byte[] plaintext = new byte[plaintextLength];
        try
        {
            using var aes = new AesGcm(_key, TagSize);
            aes.Decrypt(sealedSecret.AsSpan(0, NonceSize), sealedSecret.AsSpan(NonceSize, plaintextLength),
                sealedSecret.AsSpan(NonceSize + plaintextLength), plaintext, Encoding.UTF8.GetBytes(appId));
            return Encoding.UTF8.GetString(plaintext);
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
    }
}
