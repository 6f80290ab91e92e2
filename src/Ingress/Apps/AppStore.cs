using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Ingress.Prompts;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;
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

    /// <summary>
    /// Count of writes to <see cref="Secrets"/>. A write applies only if the version is still the one it read, so
    /// two concurrent changes cannot both replace the list. Documents stored before this field existed read as 0.
    /// </summary>
    public long Version { get; set; }

    /// <summary>The limits the operator set.</summary>
    public AppLimits Limits { get; set; } = new();

    /// <summary>The limits the app's developer set for their own bill; null until they set any.</summary>
    public AppLimits? DeveloperLimits { get; set; }

    /// <summary>The limits that apply: the stricter of the operator's and the developer's for each one.</summary>
    [BsonIgnore]
    public AppLimits EffectiveLimits => AppLimits.Stricter(Limits, DeveloperLimits);

    /// <summary>Off until the developer switches it on, which needs an active key; prompts are rejected while off.</summary>
    public bool AddonActive { get; set; }

    /// <summary>Host backend URL told about allowance thresholds; null when not configured.</summary>
    public string? WebhookUrl { get; set; }

    /// <summary>
    /// Shared secret that signs webhook bodies (HMAC-SHA256), encrypted by <see cref="WebhookSecretCipher"/> under a
    /// key that is not in the database, so a database reader cannot forge webhooks to this app's host.
    /// </summary>
    [BsonIgnoreIfNull]
    public byte[]? WebhookSecretSealed { get; set; }

    /// <summary>
    /// Plaintext signing secret of a document written before secrets were encrypted. Ingress still signs with it and
    /// replaces it by <see cref="WebhookSecretSealed"/> on its first use or the next save. No write stores a new one.
    /// </summary>
    [BsonElement("webhookSecret")]
    [BsonIgnoreIfNull]
    public string? LegacyWebhookSecret { get; set; }

    public DateTime CreatedAt { get; set; }

    /// <summary>
    /// Whether the host has ever stored per-user controls for this app. It is set to true before the first controls
    /// are written and never reset. It is null on documents stored before this field existed, whose apps may have
    /// controls.
    /// </summary>
    public bool? HasUserControls { get; set; }

    /// <summary>Whether a user's controls must be read: false only for an app known never to have had any.</summary>
    [BsonIgnore]
    public bool MayHaveUserControls => HasUserControls != false;

    /// <summary>
    /// Tells whether the secret with this id still works. End-user tokens name the secret that issued them, so
    /// revoking a leaked secret also ends the tokens minted with it.
    /// </summary>
    public bool HasActiveSecret(string? secretId, DateTime now) =>
        secretId is not null && Secrets.Any(s => s.IsActive(now) && s.Id == secretId);

    /// <summary>Tells whether the app secret that the caller's claims name still works.</summary>
    public bool HasActiveSecret(ClaimsPrincipal? caller, DateTime now) =>
        HasActiveSecret(caller?.FindFirstValue(AuthSchemes.SecretIdClaim), now);
}

/// <summary>Limits per app, set by the operator or the developer; null means unlimited. They hold across every Ingress instance.</summary>
public class AppLimits
{
    /// <summary>The largest whole number that a JavaScript number represents exactly, 2^53 - 1.</summary>
    public const long MaxExactTokens = 9_007_199_254_740_991;

    public int? RequestsPerMinute { get; set; }

    /// <summary>Default per end user; a user token may carry a lower one.</summary>
    public int? UserRequestsPerMinute { get; set; }

    public long? TokensPerDay { get; set; }

    public long? TokensPerMonth { get; set; }

    public int? MaxOutputTokens { get; set; }

    /// <summary>Models end users may ask for; null allows any.</summary>
    public List<string>? AllowedModels { get; set; }

    /// <summary>
    /// Returns, for each limit, the lower of the two, and the models that both allow. The result's model list can be
    /// empty, which allows no model.
    /// </summary>
    public static AppLimits Stricter(AppLimits first, AppLimits? second)
    {
        // NOTE: apps stored before an empty list was refused may hold one, which meant every model.
        var firstModels = first.AllowedModels is { Count: 0 } ? null : first.AllowedModels;
        var secondModels = second?.AllowedModels is { Count: 0 } ? null : second?.AllowedModels;
        return new AppLimits
        {
            RequestsPerMinute = Lower(first.RequestsPerMinute, second?.RequestsPerMinute),
            UserRequestsPerMinute = Lower(first.UserRequestsPerMinute, second?.UserRequestsPerMinute),
            TokensPerDay = Lower(first.TokensPerDay, second?.TokensPerDay),
            TokensPerMonth = Lower(first.TokensPerMonth, second?.TokensPerMonth),
            MaxOutputTokens = Lower(first.MaxOutputTokens, second?.MaxOutputTokens),
            AllowedModels = firstModels is null ? secondModels
                : secondModels is null ? firstModels
                : firstModels.Intersect(secondModels, StringComparer.Ordinal).ToList(),
        };
    }

    /// <summary>Each number limit by JSON field name, with its maximum and a reader of its value.</summary>
    /// <remarks>
    /// The token limits stop at <see cref="MaxExactTokens"/>, because browsers hold numbers as doubles, so the
    /// console could not show or send back a larger token limit exactly.
    /// </remarks>
    private static readonly (string Field, long Max, Func<AppLimits, long?> Value)[] NumberLimits =
    [
        ("requestsPerMinute", int.MaxValue, limits => limits.RequestsPerMinute),
        ("userRequestsPerMinute", int.MaxValue, limits => limits.UserRequestsPerMinute),
        ("tokensPerDay", MaxExactTokens, limits => limits.TokensPerDay),
        ("tokensPerMonth", MaxExactTokens, limits => limits.TokensPerMonth),
        ("maxOutputTokens", int.MaxValue, limits => limits.MaxOutputTokens),
    ];

    /// <summary>
    /// The range-check message of each number limit by JSON field name, which the limits endpoints also return for a
    /// value of the wrong type.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> FieldRules = NumberLimits.ToDictionary(
        limit => limit.Field,
        limit => string.Create(CultureInfo.InvariantCulture, $"{limit.Field} must be a whole number from 1 to {limit.Max}, or null for no limit."));

    /// <summary>Returns the error message for invalid limits, or null when they are valid.</summary>
    public string? Problem()
    {
        foreach (var (field, max, value) in NumberLimits)
        {
            if (value(this) is { } limit && (limit < 1 || limit > max))
            {
                return FieldRules[field];
            }
        }

        if (AllowedModels is { Count: 0 })
        {
            return "allowedModels must not be an empty list, because it would read as no model allowed. Send null or leave the field out to allow every model, or list the models to allow.";
        }

        // The same rule as the model of a prompt, because an entry that a prompt cannot name would never be used.
        int badModel = AllowedModels?.FindIndex(m => !PromptSubmitter.IsModelName(m)) ?? -1;
        if (badModel >= 0)
        {
            return string.Create(CultureInfo.InvariantCulture,
                $"allowedModels[{badModel}] is not a model name. Each entry must be a string of 1 to 100 letters, digits, '.', '_', ':' or '-', not null or empty, and must not start with 'sk-' as API keys do.");
        }

        return null;
    }

    /// <summary>Returns a copy that shares no list with this one.</summary>
    public AppLimits Copy() => new()
    {
        RequestsPerMinute = RequestsPerMinute,
        UserRequestsPerMinute = UserRequestsPerMinute,
        TokensPerDay = TokensPerDay,
        TokensPerMonth = TokensPerMonth,
        MaxOutputTokens = MaxOutputTokens,
        AllowedModels = AllowedModels?.ToList(),
    };

    private static T? Lower<T>(T? first, T? second)
        where T : struct, IComparable<T>
    {
        if (first is null || second is null)
        {
            return first ?? second;
        }

        return first.Value.CompareTo(second.Value) <= 0 ? first : second;
    }
}

/// <summary>
/// Operator limits that every new app starts with, from the <c>NewAppLimits</c> configuration section. Without it a
/// new app has no limits until the operator or the developer sets some.
/// </summary>
public sealed class NewAppLimits : AppLimits
{
    public const string SectionName = "NewAppLimits";
}

/// <summary>Start-up check that rejects new-app limits which the limits endpoints would reject too.</summary>
public sealed class NewAppLimitsValidator : IValidateOptions<NewAppLimits>
{
    public ValidateOptionsResult Validate(string? name, NewAppLimits options) =>
        options.Problem() is { } problem
            ? ValidateOptionsResult.Fail($"{NewAppLimits.SectionName} is invalid: {problem} Fix the {NewAppLimits.SectionName}__* settings of Ingress.")
            : ValidateOptionsResult.Success;
}

public sealed class AppSecretHash
{
    public byte[] Salt { get; set; } = [];

    public byte[] Hash { get; set; } = [];

    public int Iterations { get; set; }

    public DateTime CreatedAt { get; set; }

    /// <summary>End of the grace period after a rotation; null while the secret is current.</summary>
    public DateTime? ExpiresAt { get; set; }

    /// <summary>Names the secret in tokens without revealing anything about it: a digest of its random salt.</summary>
    [BsonIgnore]
    public string Id => Convert.ToBase64String(SHA256.HashData(Salt), 0, 12).Replace('+', '-').Replace('/', '_');

    public bool IsActive(DateTime now) => ExpiresAt is null || ExpiresAt > now;
}

/// <summary>Outcome of a change to an app's secrets.</summary>
public enum SecretChange
{
    Done,
    AppNotFound,

    /// <summary>Revocation found no working secret besides the current one, so nothing was changed.</summary>
    NoPreviousSecret,

    /// <summary>Other changes to the app's secrets were written first on every attempt, so this one was not written.</summary>
    Contended,
}

/// <summary>Creates apps and verifies app credentials.</summary>
public sealed partial class AppStore(IMongoDatabase database, IMemoryCache cache, TimeProvider clock, WebhookSecretCipher webhookSecrets,
    IOptions<NewAppLimits> newAppLimits, ILogger<AppStore> logger)
{
    // PBKDF2-HMAC-SHA256 at OWASP's 2023 recommendation. A verified secret is then cached for 30 seconds, so the
    // slow hash runs about twice a minute per credential, not once per request. Each use of a cached secret checks
    // the app's secrets from a 5-second cache, so a revoked secret stops working at once on the instance that
    // revoked it and within 5 seconds on the others.
    private const int Iterations = 600_000;
    private static readonly TimeSpan VerifiedCacheLifetime = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan AppCacheLifetime = TimeSpan.FromSeconds(5);

    // Each failed attempt means another change to the secrets was written, so up to this many concurrent changes
    // all get through.
    private const int MaxSecretWriteAttempts = 10;
    private readonly IMongoCollection<AppDocument> _apps = database.GetCollection<AppDocument>("apps");

    // Counts the changes this instance made to each app. A read that a change overtook must not refill the cache
    // after the change emptied it, or the old app would be served for another 5 seconds on this instance too.
    private readonly ConcurrentDictionary<string, long> _changes = new(StringComparer.Ordinal);

    public async Task<(string AppId, string Secret)> CreateAsync(string name, CancellationToken cancellationToken)
    {
        string appId = "app_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        string secret = NewSecret();
        var now = clock.GetUtcNow().UtcDateTime;
        await _apps.InsertOneAsync(new AppDocument
        {
            AppId = appId,
            Name = name,
            CreatedAt = now,
            Limits = newAppLimits.Value.Copy(),
            Secrets = [Hash(secret, now)],
            HasUserControls = false,
        }, cancellationToken: cancellationToken);
        return (appId, secret);
    }

    /// <summary>Returns up to <paramref name="limit"/> apps in id order, after the given id when one is given.</summary>
    public Task<List<AppDocument>> ListAsync(string? after, int limit, CancellationToken cancellationToken) =>
        _apps.Find(after is null ? FilterDefinition<AppDocument>.Empty : Builders<AppDocument>.Filter.Gt(a => a.AppId, after))
            .SortBy(a => a.AppId)
            .Limit(limit)
            .ToListAsync(cancellationToken);

    public async Task<bool> DeleteAsync(string appId, CancellationToken cancellationToken)
    {
        var result = await _apps.DeleteOneAsync(a => a.AppId == appId, cancellationToken);
        Forget(appId);
        return result.DeletedCount > 0;
    }

    public Task<AppDocument?> FindAsync(string appId, CancellationToken cancellationToken) =>
        _apps.Find(a => a.AppId == appId).FirstOrDefaultAsync(cancellationToken)!;

    /// <summary>Returns the apps with these ids that exist, by id, read fresh from the database.</summary>
    public async Task<Dictionary<string, AppDocument>> FindManyAsync(IEnumerable<string> appIds, CancellationToken cancellationToken)
    {
        var found = await _apps.Find(Builders<AppDocument>.Filter.In(a => a.AppId, appIds)).ToListAsync(cancellationToken);
        return found.ToDictionary(a => a.AppId);
    }

    /// <summary>Returns the app from a cache of a few seconds, so limits cost no database read per prompt.</summary>
    public async Task<AppDocument?> FindCachedAsync(string appId, CancellationToken cancellationToken)
    {
        if (cache.TryGetValue(AppCacheKey(appId), out AppDocument? cached))
        {
            return cached;
        }

        long changes = ChangesOf(appId);
        var app = await FindAsync(appId, cancellationToken);
        cache.Set(AppCacheKey(appId), app, AppCacheLifetime);

        // A change made before the entry was stored removed nothing, so the entry goes now. One made after it
        // removes the entry itself.
        if (ChangesOf(appId) != changes)
        {
            cache.Remove(AppCacheKey(appId));
        }

        return app;
    }

    /// <summary>Drops the cached app after a change made through this instance, so the change applies here at once.</summary>
    private void Forget(string appId)
    {
        _changes.AddOrUpdate(appId, 1, (_, count) => count + 1);
        cache.Remove(AppCacheKey(appId));
    }

    private long ChangesOf(string appId) => _changes.TryGetValue(appId, out long count) ? count : 0;

    private static string AppCacheKey(string appId) => "app:" + appId;

    /// <summary>Stores the operator's limits, or with <paramref name="developer"/> the developer's own.</summary>
    public async Task<bool> SetLimitsAsync(string appId, AppLimits limits, CancellationToken cancellationToken, bool developer = false)
    {
        var update = developer
            ? Builders<AppDocument>.Update.Set(a => a.DeveloperLimits, limits)
            : Builders<AppDocument>.Update.Set(a => a.Limits, limits);
        var result = await _apps.UpdateOneAsync(a => a.AppId == appId, update, cancellationToken: cancellationToken);
        Forget(appId);
        return result.MatchedCount > 0;
    }

    /// <summary>
    /// Records that the app has per-user controls, so prompts read them from now on: at once on this instance and,
    /// once their app cache expires, within 5 seconds on the others. Call it before the controls are written, so no
    /// instance can find stored controls while the app's flag is still false in the database.
    /// </summary>
    public async Task MarkUserControlsAsync(string appId, CancellationToken cancellationToken)
    {
        // The flag is never reset, so a cached true is still true and the write can be skipped.
        if (cache.TryGetValue(AppCacheKey(appId), out AppDocument? cached) && cached?.HasUserControls == true)
        {
            return;
        }

        await _apps.UpdateOneAsync(a => a.AppId == appId, Builders<AppDocument>.Update.Set(a => a.HasUserControls, true),
            cancellationToken: cancellationToken);
        Forget(appId);
    }

    public async Task<bool> SetActivationAsync(string appId, bool active, CancellationToken cancellationToken)
    {
        var result = await _apps.UpdateOneAsync(a => a.AppId == appId, Builders<AppDocument>.Update.Set(a => a.AddonActive, active),
            cancellationToken: cancellationToken);
        Forget(appId);
        return result.MatchedCount > 0;
    }

    /// <summary>
    /// Sets the webhook URL and returns its signing secret, or clears both when the URL is null. The secret stays the
    /// same unless <paramref name="rotateSecret"/> is set, there was none, or the stored one cannot be decrypted, so
    /// saving the form again does not break the host's signature check but does replace an unusable secret.
    /// </summary>
    public async Task<string?> SetWebhookAsync(string appId, string? url, bool rotateSecret, CancellationToken cancellationToken)
    {
        // Every write removes the plaintext field, so a document written before encryption contains only ciphertext after it.
        var update = Builders<AppDocument>.Update.Set(a => a.WebhookUrl, url).Unset(a => a.LegacyWebhookSecret);
        string? secret = null;
        if (url is null)
        {
            update = update.Unset(a => a.WebhookSecretSealed);
        }
        else
        {
            var app = rotateSecret ? null : await FindAsync(appId, cancellationToken);
            string? current = app is null ? null : OpenWebhookSecret(app);
            if (app?.WebhookSecretSealed is not null && current is null)
            {
                LogWebhookSecretReplaced(appId);
            }

            secret = current ?? "whsec_" + Base64Url(RandomNumberGenerator.GetBytes(32));
            update = update.Set(a => a.WebhookSecretSealed, webhookSecrets.Seal(appId, secret));
        }

        await _apps.UpdateOneAsync(a => a.AppId == appId, update, cancellationToken: cancellationToken);
        Forget(appId);
        return secret;
    }

    /// <summary>
    /// Returns the app's webhook signing secret, or null when it has none or the stored one cannot be decrypted, which
    /// is logged. A secret still stored in plaintext is encrypted in the database before it is returned.
    /// </summary>
    public async Task<string?> FindWebhookSecretAsync(AppDocument app, CancellationToken cancellationToken)
    {
        string? secret = OpenWebhookSecret(app);
        if (app.LegacyWebhookSecret is { } legacy)
        {
            await SealLegacyWebhookSecretAsync(app.AppId, legacy, cancellationToken);
        }
        else if (app.WebhookSecretSealed is not null && secret is null)
        {
            LogWebhookSecretUnreadable(app.AppId);
        }

        return secret;
    }

    /// <summary>Returns the stored webhook secret, or null when there is none or its ciphertext does not decrypt.</summary>
    private string? OpenWebhookSecret(AppDocument app)
    {
        // The plaintext field wins when both exist, because only an Ingress of an older version writes it (during a
        // rolling upgrade), and its write is newer than the ciphertext that it left in place.
        if (app.LegacyWebhookSecret is { } legacy)
        {
            return legacy;
        }

        return app.WebhookSecretSealed is { } sealedSecret ? webhookSecrets.Open(app.AppId, sealedSecret) : null;
    }

    /// <summary>Replaces a plaintext webhook secret by its ciphertext, unless a save changed the document since it was read.</summary>
    private async Task SealLegacyWebhookSecretAsync(string appId, string legacy, CancellationToken cancellationToken)
    {
        var filter = Builders<AppDocument>.Filter;
        var update = Builders<AppDocument>.Update
            .Set(a => a.WebhookSecretSealed, webhookSecrets.Seal(appId, legacy))
            .Unset(a => a.LegacyWebhookSecret);
        try
        {
            var result = await _apps.UpdateOneAsync(filter.Eq(a => a.AppId, appId) & filter.Eq(a => a.LegacyWebhookSecret, legacy), update,
                cancellationToken: cancellationToken);
            if (result.ModifiedCount > 0)
            {
                LogLegacyWebhookSecretSealed(appId);
            }
        }
        catch (MongoException ex)
        {
            // The plaintext secret still signs this webhook, and the next read tries the encryption again.
            LogLegacyWebhookSecretSealFailed(appId, ex.GetType().Name);
        }

        Forget(appId);
    }

    /// <summary>
    /// Adds a new secret and lets the current ones work for <paramref name="grace"/> more. Returns the new secret
    /// when the result is <see cref="SecretChange.Done"/>, else null.
    /// </summary>
    public async Task<(SecretChange Result, string? Secret)> RotateSecretAsync(string appId, TimeSpan grace, CancellationToken cancellationToken)
    {
        // The slow hash runs once, before the first read, so the time between reading and writing the secrets stays short.
        string secret = NewSecret();
        var added = Hash(secret, clock.GetUtcNow().UtcDateTime);
        var result = await UpdateSecretsAsync(appId, (secrets, now) =>
        {
            foreach (var old in secrets.Where(s => s.IsActive(now + grace)))
            {
                old.ExpiresAt = now + grace;
            }

            secrets.RemoveAll(s => s.ExpiresAt <= now);
            added.CreatedAt = now;
            secrets.Add(added);
            return SecretChange.Done;
        }, cancellationToken);
        return (result, result == SecretChange.Done ? secret : null);
    }

    /// <summary>
    /// Ends the grace period of every secret but the current one, at once. Returns
    /// <see cref="SecretChange.NoPreviousSecret"/> without a change when no other secret still works.
    /// </summary>
    public Task<SecretChange> RevokePreviousSecretsAsync(string appId, CancellationToken cancellationToken) =>
        UpdateSecretsAsync(appId, (secrets, now) =>
        {
            // Rotation appends, so the last secret is the current one.
            if (secrets.Count == 0 || !secrets.SkipLast(1).Any(s => s.IsActive(now)))
            {
                return SecretChange.NoPreviousSecret;
            }

            secrets.RemoveRange(0, secrets.Count - 1);
            return SecretChange.Done;
        }, cancellationToken);

    /// <summary>
    /// Reads the app's secrets, lets <paramref name="change"/> edit them and writes them back only if no other change
    /// was written since the read. Otherwise it reads again and retries. Writes nothing when the change returns
    /// anything but <see cref="SecretChange.Done"/>.
    /// </summary>
    private async Task<SecretChange> UpdateSecretsAsync(string appId, Func<List<AppSecretHash>, DateTime, SecretChange> change,
        CancellationToken cancellationToken)
    {
        for (int attempt = 0; attempt < MaxSecretWriteAttempts; attempt++)
        {
            var app = await FindAsync(appId, cancellationToken);
            if (app is null)
            {
                return SecretChange.AppNotFound;
            }

            var result = change(app.Secrets, clock.GetUtcNow().UtcDateTime);
            if (result != SecretChange.Done)
            {
                return result;
            }

            var update = Builders<AppDocument>.Update.Set(a => a.Secrets, app.Secrets).Set(a => a.Version, app.Version + 1);
            var written = await _apps.UpdateOneAsync(VersionFilter(appId, app.Version), update, cancellationToken: cancellationToken);
            if (written.MatchedCount > 0)
            {
                Forget(appId);
                return SecretChange.Done;
            }
        }

        return SecretChange.Contended;
    }

    /// <summary>Matches the app only while its version is still <paramref name="version"/>.</summary>
    private static FilterDefinition<AppDocument> VersionFilter(string appId, long version)
    {
        var filter = Builders<AppDocument>.Filter;
        var sameVersion = filter.Eq(a => a.Version, version);
        if (version == 0)
        {
            // Documents stored before the version field existed have none, so they count as the first version.
            sameVersion |= filter.Exists(a => a.Version, false);
        }

        return filter.Eq(a => a.AppId, appId) & sameVersion;
    }

    /// <summary>Returns the id of the app's secret that <paramref name="secret"/> is, or null when it matches none of them.</summary>
    public async Task<string?> VerifyAsync(string appId, string secret, CancellationToken cancellationToken)
    {
        string cacheKey = "app-secret:" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(appId + "\n" + secret)));
        var now = clock.GetUtcNow().UtcDateTime;
        if (cache.TryGetValue(cacheKey, out string? verifiedId))
        {
            // The app's own short cache is dropped when the app is removed or its secrets change, so a removed app or
            // a revoked secret stops working at once here and within seconds on other instances.
            var cached = await FindCachedAsync(appId, cancellationToken);
            return cached is not null && cached.HasActiveSecret(verifiedId, now) ? verifiedId : null;
        }

        var app = await FindAsync(appId, cancellationToken);
        if (app is null)
        {
            return null;
        }

        byte[] secretBytes = Encoding.UTF8.GetBytes(secret);
        foreach (var stored in app.Secrets.Where(s => s.IsActive(now)))
        {
            byte[] candidate = Rfc2898DeriveBytes.Pbkdf2(secretBytes, stored.Salt, stored.Iterations, HashAlgorithmName.SHA256, stored.Hash.Length);
            if (CryptographicOperations.FixedTimeEquals(candidate, stored.Hash))
            {
                cache.Set(cacheKey, stored.Id, VerifiedCacheLifetime);
                return stored.Id;
            }
        }

        return null;
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

    [LoggerMessage(EventId = 1105, Level = LogLevel.Warning,
        Message = "Skipped the webhook of app {AppId}, because its stored signing secret does not decrypt with the key derived from Auth:UserIdKey "
            + "(Auth:TokenSigningKey while that is unset). Restore the former key, or have the developer save the webhook again to get a new secret.")]
    private partial void LogWebhookSecretUnreadable(string appId);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Information,
        Message = "Issued a new webhook signing secret for app {AppId}, because the stored one does not decrypt")]
    private partial void LogWebhookSecretReplaced(string appId);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Information, Message = "Encrypted the plaintext webhook signing secret of app {AppId}")]
    private partial void LogLegacyWebhookSecretSealed(string appId);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Warning,
        Message = "Encrypting the plaintext webhook signing secret of app {AppId} failed with {ExceptionType}, so the next use retries")]
    private partial void LogLegacyWebhookSecretSealFailed(string appId, string exceptionType);

    private static string NewSecret() => "aes_" + Base64Url(RandomNumberGenerator.GetBytes(32));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
