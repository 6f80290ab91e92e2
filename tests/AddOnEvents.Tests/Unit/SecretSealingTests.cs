using System.Security.Cryptography;
using System.Text.Json;
using AddOnEvents.Common.Crypto;

namespace AddOnEvents.Tests.Unit;

public sealed class SecretSealingTests
{
    private const string Key = "sk-sealed-0123456789abcdefghijklmnopqrstuv";

    [Fact]
    public void SealedKeyOpensWithPrivateKey()
    {
        using var recipient = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);

        var sealedKey = SecretSealing.Seal(Key, recipient, "seal1", "ctx");
        using var opened = SecretSealing.Open(sealedKey, recipient, "seal1", "ctx");

        Assert.Equal(Key, opened.Reveal());
    }

    [Fact]
    public void SealedKeyHoldsNoPlaintext()
    {
        using var recipient = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);

        var sealedKey = SecretSealing.Seal(Key, recipient, "seal1", "ctx");
        string json = JsonSerializer.Serialize(sealedKey);

        Assert.DoesNotContain(Key[..8], json, StringComparison.Ordinal);
        Assert.DoesNotContain(Key[^8..], json, StringComparison.Ordinal);
    }

    [Fact]
    public void OtherContextCannotOpen()
    {
        using var recipient = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var sealedKey = SecretSealing.Seal(Key, recipient, "seal1", SecretSealing.KeyContext("app_a", 1));

        Assert.ThrowsAny<CryptographicException>(() => SecretSealing.Open(sealedKey, recipient, "seal1", SecretSealing.KeyContext("app_b", 1)));
    }

    [Fact]
    public void OtherPrivateKeyCannotOpen()
    {
        using var recipient = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        using var stranger = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var sealedKey = SecretSealing.Seal(Key, recipient, "seal1", "ctx");

        Assert.ThrowsAny<CryptographicException>(() => SecretSealing.Open(sealedKey, stranger, "seal1", "ctx"));
    }

    [Fact]
    public void TamperedCiphertextCannotOpen()
    {
        using var recipient = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var sealedKey = SecretSealing.Seal(Key, recipient, "seal1", "ctx");
        byte[] tampered = (byte[])sealedKey.Ciphertext.Clone();
        tampered[3] ^= 0x40;

        Assert.ThrowsAny<CryptographicException>(() => SecretSealing.Open(sealedKey with { Ciphertext = tampered }, recipient, "seal1", "ctx"));
    }

    [Fact]
    public void ProviderKeyPrintsRedacted()
    {
        using var key = new ProviderKey(Key);

        Assert.DoesNotContain(Key, key.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(Key, $"{key}", StringComparison.Ordinal);
        Assert.DoesNotContain(Key, JsonSerializer.Serialize(new { key }), StringComparison.Ordinal);
        Assert.Equal("sk-...stuv", key.Hint());
    }

    [Fact]
    public void DisposedProviderKeyCannotBeRead()
    {
        var key = new ProviderKey(Key);

        key.Dispose();

        Assert.Throws<ObjectDisposedException>(() => key.Reveal());
    }

    [Fact]
    public void PublicKeyOnlyServiceRejectsPrivateKeySetting()
    {
        using var pair = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var options = new SealingOptions
        {
            KeyId = "seal1",
            PublicKey = Convert.ToBase64String(pair.ExportSubjectPublicKeyInfo()),
            PrivateKey = Convert.ToBase64String(pair.ExportPkcs8PrivateKey()),
        };

        var result = new SealingOptionsValidator(requirePrivateKey: false).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains("Sealing:PrivateKey is set", result.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void MalformedPrivateKeyIsNamed()
    {
        var options = new SealingOptions { KeyId = "seal1", PrivateKey = "bm90IGEga2V5" };

        var result = new SealingOptionsValidator(requirePrivateKey: true).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains("Sealing:PrivateKey is invalid", result.FailureMessage, StringComparison.Ordinal);
    }
}
