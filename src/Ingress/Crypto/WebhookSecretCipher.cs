using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Crypto;

/// <summary>
/// AES-256-GCM encryption of what Ingress stores for webhooks: an app's signing secret, so that a database dump alone
/// cannot forge webhooks, and the URL and body of a pending delivery, because the body names the host's user. The keys
/// derive by HKDF-SHA256 from Auth:UserIdKey, which is never in the database and must not change, so stored values
/// stay readable across a token signing key rotation and no new setting is needed. Secrets and deliveries use
/// separate keys. The app id (and for a delivery also its id and field) is the associated data, so a sealed value
/// copied into another app's document, another delivery or another field does not open.
/// </summary>
public sealed class WebhookSecretCipher
{
    private const int NonceSize = 12;
    private const int TagSize = 16;

    private readonly byte[] _secretKey;
    private readonly byte[] _deliveryKey;

    public WebhookSecretCipher(IOptions<AuthOptions> options)
        : this(options.Value.UserIdKeyBytes())
    {
    }

    /// <summary>Creates a cipher whose keys derive from <paramref name="userIdKey"/>, the bytes of Auth:UserIdKey.</summary>
    public WebhookSecretCipher(byte[] userIdKey)
    {
        _secretKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, userIdKey, 32, info: "addonevents webhook secret v1"u8.ToArray());
        _deliveryKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, userIdKey, 32, info: "addonevents webhook delivery v1"u8.ToArray());
    }

    /// <summary>Encrypts the secret under a fresh random nonce. The result is nonce, ciphertext and tag, in that order.</summary>
    public byte[] Seal(string appId, string secret) => Seal(_secretKey, appId, secret);

    /// <summary>
    /// Decrypts a secret that <see cref="Seal"/> produced for the same app. Returns null when it does not open, because it
    /// was sealed for another app, under another key, or changed since.
    /// </summary>
    public string? Open(string appId, byte[] sealedSecret) => Open(_secretKey, appId, sealedSecret);

    /// <summary>Encrypts one field (<paramref name="field"/> names it, such as "url" or "body") of a pending webhook delivery.</summary>
    public byte[] SealDeliveryField(string appId, Guid deliveryId, string field, string value) =>
        Seal(_deliveryKey, DeliveryAssociatedData(appId, deliveryId, field), value);

    /// <summary>
    /// Decrypts a field that <see cref="SealDeliveryField"/> produced for the same app, delivery and field name, or
    /// returns null when it does not open.
    /// </summary>
    public string? OpenDeliveryField(string appId, Guid deliveryId, string field, byte[] sealedValue) =>
        Open(_deliveryKey, DeliveryAssociatedData(appId, deliveryId, field), sealedValue);

    private static string DeliveryAssociatedData(string appId, Guid deliveryId, string field) => $"{appId}\n{deliveryId:N}\n{field}";

    private static byte[] Seal(byte[] key, string associatedData, string value)
    {
        byte[] plaintext = Encoding.UTF8.GetBytes(value);
        byte[] sealedValue = new byte[NonceSize + plaintext.Length + TagSize];
        var nonce = sealedValue.AsSpan(0, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(key, TagSize);
        aes.Encrypt(nonce, plaintext, sealedValue.AsSpan(NonceSize, plaintext.Length), sealedValue.AsSpan(NonceSize + plaintext.Length),
            Encoding.UTF8.GetBytes(associatedData));
        return sealedValue;
    }

    private static string? Open(byte[] key, string associatedData, byte[] sealedValue)
    {
        if (sealedValue.Length < NonceSize + TagSize)
        {
            return null;
        }

        int plaintextLength = sealedValue.Length - NonceSize - TagSize;
        byte[] plaintext = new byte[plaintextLength];
        try
        {
            using var aes = new AesGcm(key, TagSize);
            aes.Decrypt(sealedValue.AsSpan(0, NonceSize), sealedValue.AsSpan(NonceSize, plaintextLength),
                sealedValue.AsSpan(NonceSize + plaintextLength), plaintext, Encoding.UTF8.GetBytes(associatedData));
            return Encoding.UTF8.GetString(plaintext);
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
    }
}
