using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Caching.Memory;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Ingress.Apps;

/// <summary>An app registered by the operator. Its secrets are stored only as salted PBKDF2 hashes.</summary>
public sealed class AppDocument
{
    [BsonId]
    public string AppId { get; set; } = "";

    public string Name { get; set; } = "";

    public List<AppSecretHash> Secrets { get; set; } = [];

    public DateTime CreatedAt { get; set; }
}

public sealed class AppSecretHash
{
    public byte[] Salt { get; set; } = [];

    public byte[] Hash { get; set; } = [];

    public int Iterations { get; set; }

    public DateTime CreatedAt { get; set; }

    /// <summary>End of the grace period after a rotation; null while the secret is current.</summary>
    public DateTime? ExpiresAt { get; set; }
}

/// <summary>Creates apps and verifies app credentials.</summary>
public sealed class AppStore(IMongoDatabase database, IMemoryCache cache, TimeProvider clock)
{
    // PBKDF2-HMAC-SHA256 at OWASP's 2023 recommendation; a verified secret is then cached for a minute, so the
    // slow hash runs once per minute per credential, not once per request.
    private const int Iterations = 600_000;
    private static readonly TimeSpan VerifiedCacheLifetime = TimeSpan.FromMinutes(1);
    private readonly IMongoCollection<AppDocument> _apps = database.GetCollection<AppDocument>("apps");

    public async Task<(string AppId, string Secret)> CreateAsync(string name, CancellationToken cancellationToken)
    {
        string appId = "app_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        string secret = "aes_" + Base64Url(RandomNumberGenerator.GetBytes(32));
        var now = clock.GetUtcNow().UtcDateTime;
        await _apps.InsertOneAsync(new AppDocument
        {
            AppId = appId,
            Name = name,
            CreatedAt = now,
            Secrets = [Hash(secret, now)],
        }, cancellationToken: cancellationToken);
        return (appId, secret);
    }

    public Task<AppDocument?> FindAsync(string appId, CancellationToken cancellationToken) =>
        _apps.Find(a => a.AppId == appId).FirstOrDefaultAsync(cancellationToken)!;

    public async Task<bool> VerifyAsync(string appId, string secret, CancellationToken cancellationToken)
    {
        string cacheKey = "app-secret:" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(appId + "\n" + secret)));
        if (cache.TryGetValue(cacheKey, out _))
        {
            return true;
        }

        var app = await FindAsync(appId, cancellationToken);
        if (app is null)
        {
            return false;
        }

        var now = clock.GetUtcNow().UtcDateTime;
        byte[] secretBytes = Encoding.UTF8.GetBytes(secret);
        foreach (var stored in app.Secrets.Where(s => s.ExpiresAt is null || s.ExpiresAt > now))
        {
            byte[] candidate = Rfc2898DeriveBytes.Pbkdf2(secretBytes, stored.Salt, stored.Iterations, HashAlgorithmName.SHA256, stored.Hash.Length);
            if (CryptographicOperations.FixedTimeEquals(candidate, stored.Hash))
            {
                cache.Set(cacheKey, true, VerifiedCacheLifetime);
                return true;
            }
        }

        return false;
    }

    private static AppSecretHash Hash(string secret, DateTime now)
    {
        byte[] salt = RandomNumberGenerator.GetBytes(16);
        return new AppSecretHash
        {
            Salt = salt,
            Iterations = Iterations,
            Hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(secret), salt, Iterations, HashAlgorithmName.SHA256, 32),
            CreatedAt = now,
        };
    }

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
