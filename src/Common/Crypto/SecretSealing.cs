using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Contracts;

namespace AddOnEvents.Common.Crypto;

/// <summary>
/// Hybrid encryption of a secret to a P-256 public key: an ephemeral ECDH agreement, HKDF-SHA256 to an AES-256 key,
/// AES-GCM with the caller's context as associated data. A sealed secret opens only with the private key and only
/// for the same context, so a sealed key copied into a message for another app fails to open.
/// </summary>
public static class SecretSealing
{
    private const int NonceSize = 12;
    private const int TagSize = 16;
    private static readonly byte[] KdfInfo = "addonevents sealed secret v1"u8.ToArray();

    public static SealedSecret Seal(ReadOnlySpan<char> secret, ECDiffieHellman recipient, string recipientKeyId, string context)
    {
        using var ephemeral = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        byte[] ephemeralPublic = ephemeral.ExportSubjectPublicKeyInfo();
        byte[] aesKey = DeriveKey(ephemeral, recipient.PublicKey, ephemeralPublic);

        byte[] plaintext = new byte[Encoding.UTF8.GetByteCount(secret)];
        try
        {
            Encoding.UTF8.GetBytes(secret, plaintext);
            byte[] nonce = RandomNumberGenerator.GetBytes(NonceSize);
            byte[] ciphertext = new byte[plaintext.Length];
            byte[] tag = new byte[TagSize];
            using (var aes = new AesGcm(aesKey, TagSize))
            {
                aes.Encrypt(nonce, plaintext, ciphertext, tag, AssociatedData(recipientKeyId, context));
            }

            return new SealedSecret(recipientKeyId, ephemeralPublic, nonce, ciphertext, tag);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
            CryptographicOperations.ZeroMemory(aesKey);
        }
    }

    /// <exception cref="CryptographicException">The sealed secret was changed, is for another key or context.</exception>
    public static ProviderKey Open(SealedSecret sealedSecret, ECDiffieHellman recipient, string recipientKeyId, string context)
    {
        if (sealedSecret.RecipientKeyId != recipientKeyId)
        {
            throw new CryptographicException(
                $"The secret is sealed to key '{sealedSecret.RecipientKeyId}', but this service holds '{recipientKeyId}'.");
        }

        if (sealedSecret.Nonce.Length != NonceSize || sealedSecret.Tag.Length != TagSize)
        {
            throw new CryptographicException("The sealed secret has a nonce or tag of the wrong size.");
        }

        using var ephemeral = ECDiffieHellman.Create();
        ephemeral.ImportSubjectPublicKeyInfo(sealedSecret.EphemeralPublicKey, out _);
        byte[] aesKey = DeriveKey(recipient, ephemeral.PublicKey, sealedSecret.EphemeralPublicKey);
        byte[] plaintext = new byte[sealedSecret.Ciphertext.Length];
        char[]? chars = null;
        try
        {
            using (var aes = new AesGcm(aesKey, TagSize))
            {
                aes.Decrypt(sealedSecret.Nonce, sealedSecret.Ciphertext, sealedSecret.Tag, plaintext,
                    AssociatedData(recipientKeyId, context));
            }

            chars = new char[Encoding.UTF8.GetCharCount(plaintext)];
            Encoding.UTF8.GetChars(plaintext, chars);
            return new ProviderKey(chars);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
            CryptographicOperations.ZeroMemory(aesKey);
            if (chars is not null)
            {
                Array.Clear(chars);
            }
        }
    }

    /// <summary>Returns the context that binds a sealed key to one app and one key version.</summary>
    public static string KeyContext(string appId, long keyVersion) => $"key-registration|{appId}|{keyVersion}";

    private static byte[] DeriveKey(ECDiffieHellman own, ECDiffieHellmanPublicKey peer, byte[] ephemeralPublic)
    {
        byte[] shared = own.DeriveRawSecretAgreement(peer);
        try
        {
            return HKDF.DeriveKey(HashAlgorithmName.SHA256, shared, 32, salt: ephemeralPublic, info: KdfInfo);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(shared);
        }
    }

    private static byte[] AssociatedData(string recipientKeyId, string context) =>
        Encoding.UTF8.GetBytes($"{recipientKeyId}|{context}");
}
