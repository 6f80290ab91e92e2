using System.ComponentModel.DataAnnotations;

namespace AddOnEvents.Ingress.Options;

/// <summary>Limits and timeouts of the public API.</summary>
public sealed class PromptOptions
{
    public const string SectionName = "Prompts";

    /// <summary>Longest prompt accepted, in UTF-16 characters; longer ones get 413 prompt_too_long.</summary>
    [Range(1, 1_000_000)]
    public int MaxPromptCharacters { get; set; } = 16_000;

    [Required]
    public string DefaultModel { get; set; } = "gpt-4o-mini";

    [Range(1, 128_000)]
    public int DefaultMaxOutputTokens { get; set; } = 1024;

    /// <summary>Largest max_tokens a request may ask for.</summary>
    [Range(1, 128_000)]
    public int MaxOutputTokensLimit { get; set; } = 4096;

    /// <summary>After this many seconds an unanswered prompt is dropped as request_expired, because nobody waits for it.</summary>
    [Range(5, 3600)]
    public int TimeToLiveSeconds { get; set; } = 600;

    /// <summary>How long a request waits for the broker to confirm a publish before it answers 503.</summary>
    [Range(1, 120)]
    public int PublishTimeoutSeconds { get; set; } = 10;

    /// <summary>Cancels one end user may send per minute. Further cancels get 429 rate_limited.</summary>
    [Range(1, 10_000)]
    public int CancelsPerMinute { get; set; } = 30;

    /// <summary>Hub connections one end user may have open on one Ingress instance. A further connection is closed.</summary>
    [Range(1, 10_000)]
    public int MaxConnectionsPerUser { get; set; } = 20;
}

/// <summary>Credentials of the operator, the keys of end-user tokens, and the key behind user pseudonyms.</summary>
public sealed class AuthOptions
{
    public const string SectionName = "Auth";

    [Required(ErrorMessage = "Auth:AdminToken is missing: set it to a random string of at least 32 characters (openssl rand -hex 32).")]
    [MinLength(32, ErrorMessage = "Auth:AdminToken is too short: use at least 32 characters (openssl rand -hex 32).")]
    public string AdminToken { get; set; } = "";

    [Required(ErrorMessage = "Auth:TokenSigningKey is missing: set it to base64 of at least 32 random bytes (openssl rand -base64 48).")]
    public string TokenSigningKey { get; set; } = "";

    /// <summary>
    /// Former signing keys, base64 like <see cref="TokenSigningKey"/>, whose tokens are still accepted but which never
    /// sign new ones, so that a rotation need not end every open session at once.
    /// </summary>
    public List<string> PreviousTokenSigningKeys { get; set; } = [];

    /// <summary>
    /// Base64 key from which the user pseudonyms and the sealed user references derive. Unset or empty means
    /// <see cref="TokenSigningKey"/>, as before this setting existed, so that rotating the signing key after setting
    /// this to its old value keeps every user's stored controls, usage and prompt results.
    /// </summary>
    public string? UserIdKey { get; set; }

    [Range(30, 86_400)]
    public int DefaultTokenLifetimeSeconds { get; set; } = 600;

    [Range(30, 86_400)]
    public int MaxTokenLifetimeSeconds { get; set; } = 3600;

    public byte[] SigningKeyBytes() => DecodeKey(TokenSigningKey, "Auth:TokenSigningKey");

    /// <summary>Returns the keys of <see cref="PreviousTokenSigningKeys"/>, skipping empty entries.</summary>
    public List<byte[]> PreviousSigningKeyBytes() =>
        PreviousTokenSigningKeys
            .Select((key, index) => (key, index))
            .Where(entry => !string.IsNullOrWhiteSpace(entry.key))
            .Select(entry => DecodeKey(entry.key, $"Auth:PreviousTokenSigningKeys:{entry.index}"))
            .ToList();

    /// <summary>Returns the key behind user pseudonyms: <see cref="UserIdKey"/> when set, else the signing key.</summary>
    public byte[] UserIdKeyBytes() =>
        string.IsNullOrWhiteSpace(UserIdKey) ? SigningKeyBytes() : DecodeKey(UserIdKey, "Auth:UserIdKey");

    private static byte[] DecodeKey(string value, string setting)
    {
        byte[] buffer = new byte[512];
        return Convert.TryFromBase64String(value.Trim(), buffer, out int written) && written >= 32
            ? buffer[..written]
            : throw new InvalidOperationException($"{setting} is invalid: it must be base64 of at least 32 bytes.");
    }
}
