using System.Security.Cryptography;
using System.Text;

namespace AddOnEvents.Common.Crypto;

/// <summary>A provider key encrypted under its own data key, with that data key wrapped by a master key.</summary>
public sealed record EncryptedKey(WrappedDataKey DataKey, byte[] Nonce, byte[] Ciphertext);

/// <summary>The stored key does not decrypt: it was edited, copied from another app or version, or its master key is gone.</summary>
public sealed class KeyDecryptionException(string message, Exception innerException) : Exception(message, innerException);

/// <summary>
/// Envelope encryption of provider keys. Each key gets a fresh 256-bit data key; the associated data names the app and
/// key version, so a document copied to another app or an edited field fails to decrypt.
/// </summary>
public sealed class EnvelopeCipher(IMasterKeyProvider masterKeys)
{
    private const int NonceSize = 12;
    private const int TagSize = 16;

    public async Task<EncryptedKey> EncryptAsync(ProviderKey key, string appId, long keyVersion, CancellationToken cancellationToken)
    {
        byte[] dataKey = RandomNumberGenerator.GetBytes(32);
        byte[] plaintext = new byte[Encoding.UTF8.GetByteCount(key.AsSpan())];
        try
        {
            Encoding.UTF8.GetBytes(key.AsSpan(), plaintext);
            byte[] nonce = RandomNumberGenerator.GetBytes(NonceSize);
            byte[] ciphertext = new byte[plaintext.Length + TagSize];
            using (var aes = new AesGcm(dataKey, TagSize))
            {
                aes.Encrypt(nonce, plaintext, ciphertext.AsSpan(0, plaintext.Length), ciphertext.AsSpan(plaintext.Length),
                    Context("provider-key", appId, keyVersion));
            }

            var wrapped = await masterKeys.WrapAsync(dataKey, Context("data-key", appId, keyVersion), cancellationToken);
            return new EncryptedKey(wrapped, nonce, ciphertext);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
            CryptographicOperations.ZeroMemory(dataKey);
        }
    }

    /// <exception cref="KeyDecryptionException">The key does not decrypt for this app and version.</exception>
    public async Task<ProviderKey> DecryptAsync(EncryptedKey encrypted, string appId, long keyVersion, CancellationToken cancellationToken)
    {
        byte[] dataKey = await UnwrapAsync(encrypted.DataKey, appId, keyVersion, cancellationToken);
        byte[]? plaintext = null;
        char[]? chars = null;
        try
        {
            if (encrypted.Nonce.Length != NonceSize || encrypted.Ciphertext.Length < TagSize)
            {
                throw new CryptographicException("The nonce or ciphertext has the wrong size.");
            }

            int length = encrypted.Ciphertext.Length - TagSize;
            plaintext = new byte[length];
            using (var aes = new AesGcm(dataKey, TagSize))
            {
                aes.Decrypt(encrypted.Nonce, encrypted.Ciphertext.AsSpan(0, length), encrypted.Ciphertext.AsSpan(length), plaintext,
                    Context("provider-key", appId, keyVersion));
            }

            chars = new char[Encoding.UTF8.GetCharCount(plaintext)];
            Encoding.UTF8.GetChars(plaintext, chars);
            return new ProviderKey(chars);
        }
        catch (CryptographicException ex)
        {
            throw new KeyDecryptionException(
                $"The stored key of app '{appId}' version {keyVersion} failed to decrypt: the document was changed or copied.", ex);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKey);
            if (plaintext is not null)
            {
                CryptographicOperations.ZeroMemory(plaintext);
            }

            if (chars is not null)
            {
                Array.Clear(chars);
            }
        }
    }

    /// <summary>
    /// Wraps the data key again under the current master key. The provider key itself stays encrypted throughout.
    /// </summary>
    public async Task<EncryptedKey> RewrapAsync(EncryptedKey encrypted, string appId, long keyVersion, CancellationToken cancellationToken)
    {
        byte[] dataKey = await UnwrapAsync(encrypted.DataKey, appId, keyVersion, cancellationToken);
        try
        {
            var wrapped = await masterKeys.WrapAsync(dataKey, Context("data-key", appId, keyVersion), cancellationToken);
            return encrypted with { DataKey = wrapped };
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKey);
        }
    }

    private async Task<byte[]> UnwrapAsync(WrappedDataKey wrapped, string appId, long keyVersion, CancellationToken cancellationToken)
    {
        try
        {
            return await masterKeys.UnwrapAsync(wrapped, Context("data-key", appId, keyVersion), cancellationToken);
        }
        catch (CryptographicException ex)
        {
            throw new KeyDecryptionException(
                $"The data key of app '{appId}' version {keyVersion} failed to unwrap with master key '{wrapped.MasterKeyId}'.", ex);
        }
    }

    private static byte[] Context(string purpose, string appId, long keyVersion) =>
        Encoding.UTF8.GetBytes($"{purpose}|{appId}|{keyVersion}");
}
