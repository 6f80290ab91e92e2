using System.Security.Cryptography;
using AddOnEvents.Common.Crypto;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Tests.Unit;

public sealed class EnvelopeCipherTests
{
    private const string Key = "sk-proj-envelope-0123456789abcdefghijklmnop";

    [Fact]
    public async Task RoundTripReturnsSameKey()
    {
        var cipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));

        var encrypted = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 3, default);
        using var decrypted = await cipher.DecryptAsync(encrypted, "app_a", 3, default);

        Assert.Equal(Key, decrypted.Reveal());
        Assert.Equal("mk1", encrypted.DataKey.MasterKeyId);
    }

    [Fact]
    public async Task EachEncryptionUsesFreshDataKeyAndNonce()
    {
        var cipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));

        var first = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        var second = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 1, default);

        Assert.NotEqual(first.Ciphertext, second.Ciphertext);
        Assert.NotEqual(first.Nonce, second.Nonce);
        Assert.NotEqual(first.DataKey.Blob, second.DataKey.Blob);
    }

    [Fact]
    public async Task TamperedCiphertextIsRejected()
    {
        var cipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));
        var encrypted = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        byte[] tampered = (byte[])encrypted.Ciphertext.Clone();
        tampered[0] ^= 1;

        var error = await Assert.ThrowsAsync<KeyDecryptionException>(() =>
            cipher.DecryptAsync(encrypted with { Ciphertext = tampered }, "app_a", 1, default));

        Assert.Contains("app_a", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TamperedWrappedDataKeyIsRejected()
    {
        var cipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));
        var encrypted = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        byte[] blob = (byte[])encrypted.DataKey.Blob.Clone();
        blob[^1] ^= 1;

        await Assert.ThrowsAsync<KeyDecryptionException>(() =>
            cipher.DecryptAsync(encrypted with { DataKey = encrypted.DataKey with { Blob = blob } }, "app_a", 1, default));
    }

    [Fact]
    public async Task WrongMasterKeyIsRejected()
    {
        var encrypted = await new EnvelopeCipher(Provider(("mk1", NewMasterKey()))).EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        var otherCipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));

        await Assert.ThrowsAsync<KeyDecryptionException>(() => otherCipher.DecryptAsync(encrypted, "app_a", 1, default));
    }

    [Fact]
    public async Task MissingMasterKeyIdIsRejected()
    {
        var encrypted = await new EnvelopeCipher(Provider(("mk1", NewMasterKey()))).EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        var otherCipher = new EnvelopeCipher(Provider(("mk9", NewMasterKey())));

        var error = await Assert.ThrowsAsync<KeyDecryptionException>(() => otherCipher.DecryptAsync(encrypted, "app_a", 1, default));

        Assert.Contains("mk1", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("app_b", 1)]
    [InlineData("app_a", 2)]
    public async Task DocumentCopiedToOtherAppOrVersionIsRejected(string appId, long version)
    {
        var cipher = new EnvelopeCipher(Provider(("mk1", NewMasterKey())));
        var encrypted = await cipher.EncryptAsync(new ProviderKey(Key), "app_a", 1, default);

        await Assert.ThrowsAsync<KeyDecryptionException>(() => cipher.DecryptAsync(encrypted, appId, version, default));
    }

    [Fact]
    public async Task RewrapMovesDataKeyToCurrentMasterKey()
    {
        string mk1 = NewMasterKey();
        var encrypted = await new EnvelopeCipher(Provider(("mk1", mk1))).EncryptAsync(new ProviderKey(Key), "app_a", 1, default);
        var rotated = new EnvelopeCipher(Provider(("mk2", NewMasterKey()), ("mk1", mk1)));

        var rewrapped = await rotated.RewrapAsync(encrypted, "app_a", 1, default);
        using var decrypted = await rotated.DecryptAsync(rewrapped, "app_a", 1, default);

        Assert.Equal("mk2", rewrapped.DataKey.MasterKeyId);
        Assert.Equal(encrypted.Ciphertext, rewrapped.Ciphertext);
        Assert.Equal(Key, decrypted.Reveal());
    }

    [Theory]
    [InlineData(null, "mk1", "MasterKeys:Keys")]
    [InlineData("c2hvcnQ=", "mk1", "MasterKeys:Keys:mk1 is invalid")]
    [InlineData("VALID", null, "MasterKeys:CurrentKeyId is missing")]
    [InlineData("VALID", "mk2", "MasterKeys:CurrentKeyId names 'mk2'")]
    public void MasterKeyOptionsNameTheWrongSetting(string? key, string? current, string expected)
    {
        var options = new MasterKeyOptions { CurrentKeyId = current };
        if (key is not null)
        {
            options.Keys["mk1"] = key == "VALID" ? NewMasterKey() : key;
        }

        var result = new MasterKeyOptionsValidator().Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains(expected, result.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void MasterKeyOfThirtyThreeBytesIsInvalid()
    {
        var options = new MasterKeyOptions { CurrentKeyId = "mk1" };
        options.Keys["mk1"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(33));

        var result = new MasterKeyOptionsValidator().Validate(null, options);

        Assert.True(result.Failed);
    }

    internal static string NewMasterKey() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    internal static LocalMasterKeyProvider Provider(params (string Id, string Key)[] keys)
    {
        var options = new MasterKeyOptions { CurrentKeyId = keys[0].Id };
        foreach (var (id, key) in keys)
        {
            options.Keys[id] = key;
        }

        return new LocalMasterKeyProvider(Options.Create(options));
    }
}
