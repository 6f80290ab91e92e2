using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Tests.Unit;

public sealed class WebhookSecretCipherTests
{
    private const string Secret = "whsec_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    private static readonly byte[] UserIdKey = RandomNumberGenerator.GetBytes(32);

    [Fact]
    public void SealedSecretOpensForSameApp()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);

        byte[] sealedSecret = cipher.Seal("app_a", Secret);

        Assert.Equal(Secret, cipher.Open("app_a", sealedSecret));
    }

    [Fact]
    public void SealedSecretContainsNoPlaintext()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);

        byte[] sealedSecret = cipher.Seal("app_a", Secret);
        string asLatin1 = Encoding.Latin1.GetString(sealedSecret);
        string asBase64 = Convert.ToBase64String(sealedSecret);

        Assert.DoesNotContain(Secret[6..14], asLatin1, StringComparison.Ordinal);
        Assert.DoesNotContain(Secret[^8..], asLatin1, StringComparison.Ordinal);
        Assert.DoesNotContain(Secret[6..14], asBase64, StringComparison.Ordinal);
    }

    [Fact]
    public void OtherAppCannotOpen()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);

        byte[] sealedSecret = cipher.Seal("app_a", Secret);

        Assert.Null(cipher.Open("app_b", sealedSecret));
    }

    [Fact]
    public void OtherKeyCannotOpen()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);
        var otherCipher = new WebhookSecretCipher(RandomNumberGenerator.GetBytes(32));

        byte[] sealedSecret = cipher.Seal("app_a", Secret);

        Assert.Null(otherCipher.Open("app_a", sealedSecret));
    }

    [Fact]
    public void ChangedCiphertextCannotOpen()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);
        byte[] sealedSecret = cipher.Seal("app_a", Secret);

        for (int i = 0; i < sealedSecret.Length; i++)
        {
            byte[] changed = (byte[])sealedSecret.Clone();
            changed[i] ^= 0x01;
            Assert.Null(cipher.Open("app_a", changed));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(12)]
    [InlineData(27)]
    public void TooShortCiphertextCannotOpen(int length)
    {
        var cipher = new WebhookSecretCipher(UserIdKey);

        Assert.Null(cipher.Open("app_a", new byte[length]));
    }

    [Fact]
    public void EachSealUsesNewNonce()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);

        byte[] first = cipher.Seal("app_a", Secret);
        byte[] second = cipher.Seal("app_a", Secret);

        Assert.NotEqual(first[..12], second[..12]);
        Assert.NotEqual(first, second);
    }

    [Fact]
    public void KeyDiffersFromUserReferenceKey()
    {
        // Both ciphers derive from Auth:UserIdKey, so only their HKDF labels keep one's ciphertext from opening as the other's.
        var options = new OptionsWrapper<AuthOptions>(new AuthOptions { TokenSigningKey = Convert.ToBase64String(UserIdKey) });
        var userRefs = new UserRefCipher(options);
        var cipher = new WebhookSecretCipher(options);

        byte[] userRef = userRefs.Seal("app_a", Secret);

        Assert.Null(cipher.Open("app_a", userRef));
        Assert.Equal(Secret, userRefs.Open("app_a", userRef));
    }

    [Fact]
    public void DeliveryFieldOpensOnlyWhereSealed()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);
        var deliveryId = Guid.NewGuid();
        const string Body = """{"userId":"host-user@example.com"}""";

        byte[] sealedBody = cipher.SealDeliveryField("app_a", deliveryId, "body", Body);

        Assert.Equal(Body, cipher.OpenDeliveryField("app_a", deliveryId, "body", sealedBody));
        Assert.Null(cipher.OpenDeliveryField("app_a", deliveryId, "url", sealedBody));
        Assert.Null(cipher.OpenDeliveryField("app_a", Guid.NewGuid(), "body", sealedBody));
        Assert.Null(cipher.OpenDeliveryField("app_b", deliveryId, "body", sealedBody));
        Assert.DoesNotContain("host-user", Encoding.Latin1.GetString(sealedBody), StringComparison.Ordinal);
    }

    [Fact]
    public void DeliveryKeyDiffersFromSecretKey()
    {
        var cipher = new WebhookSecretCipher(UserIdKey);
        var deliveryId = Guid.NewGuid();

        // Seal binds only the app id, so passing the delivery's associated data as the app id leaves the key as the one difference.
        byte[] sealedSecret = cipher.Seal($"app_a\n{deliveryId:N}\nbody", Secret);

        Assert.Null(cipher.OpenDeliveryField("app_a", deliveryId, "body", sealedSecret));
    }
}
