using System.Globalization;
using System.Security.Claims;
using System.Text;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Options;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

public sealed record KeyInput(string? ApiKey);

/// <summary>
/// The state of the newest key version, and the version and masked hint of the key that prompts use.
/// <see cref="RejectedVersion"/> names the key that the provider rejected while its replacement is pending, when
/// prompts fail until the replacement passes its check.
/// </summary>
public sealed record KeyStatus(
    string AppId, long Version, string State, string? Hint, string? ReasonCode, DateTime UpdatedAt, DateTime? CheckedAt, long? ActiveVersion,
    string? ActiveHint, long? RejectedVersion);

/// <summary>The developer console's key API: register or replace, read status, delete. Each app reaches only its own key.</summary>
public static partial class KeyEndpoints
{
    private const int MinKeyLength = 20;
    private const int MaxKeyLength = 512;

    public static RouteGroupBuilder MapKeyEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/api/apps/{appId}/openai-key").RequireAuthorization(AuthSchemes.AppCredentials);
        group.MapPut("", RegisterAsync);
        group.MapGet("", GetStatusAsync);
        group.MapDelete("", DeleteAsync);
        return group;
    }

    /// <summary>Returns null when the caller is the app named in the path, else the 403 to send.</summary>
    public static IResult? RejectOtherApp(ClaimsPrincipal user, string appId) =>
        user.FindFirstValue(AuthSchemes.AppIdClaim) == appId
            ? null
            : ApiErrors.Result(StatusCodes.Status403Forbidden, ErrorCodes.Forbidden, "These credentials belong to another app.");

    private static async Task<IResult> RegisterAsync(
        string appId,
        HttpContext http,
        KeyStore keys,
        SealingPublicKey sealing,
        ConfirmedPublisher publisher,
        TimeProvider clock,
        ILogger<ApiLogCategory> logger)
    {
        if (RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var (input, error) = await JsonBody.ReadAsync<KeyInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        string? problem = CheckKeyFormat(input!.ApiKey, out string trimmed);
        if (problem is not null)
        {
            return ApiErrors.Result(StatusCodes.Status400BadRequest, ErrorCodes.InvalidKeyFormat, problem);
        }

        var cancellationToken = http.RequestAborted;
        long version = await keys.AllocateVersionAsync(appId, cancellationToken);
        string hint;
        SealedSecret sealedKey;
        using (var providerKey = new ProviderKey(trimmed))
        {
            hint = providerKey.Hint();
            sealedKey = sealing.Seal(providerKey, SecretSealing.KeyContext(appId, version));
        }

        var now = clock.GetUtcNow();
        var message = new KeyRegistered(NewId.NextGuid(), appId, version, sealedKey, now);
        if (!await publisher.PublishAsync(message))
        {
            return ApiErrors.ServiceUnavailable(http, "The message broker did not confirm the key registration. Retry in a few seconds.");
        }

        await keys.MarkPendingAsync(appId, version, hint, now.UtcDateTime, cancellationToken);
        Log.KeyRegistrationAccepted(logger, appId, version);
        return Results.Accepted($"/api/apps/{appId}/openai-key", new { appId, version, state = KeyStates.Pending, hint });
    }

    private static async Task<IResult> GetStatusAsync(string appId, HttpContext http, KeyStore keys)
    {
        if (RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var document = await keys.FindAsync(appId, http.RequestAborted);
        return document is null
            ? ApiErrors.Result(StatusCodes.Status404NotFound, ErrorCodes.NoKeyConfigured, "This app has no OpenAI key. Register one with PUT.")
            : Results.Ok(new KeyStatus(document.AppId, document.Version, document.State, document.Hint, document.ReasonCode,
                document.UpdatedAt, document.CheckedAt, document.HasUsableKey() ? document.Material!.Version : null, ActiveHint(document),
                document.IsRejectedKeyPendingReplacement() ? document.RejectedVersion : null));
    }

    /// <summary>
    /// Returns the hint of the key that prompts use, or null when none can serve. Material stored before it kept its
    /// own hint has one only when it is the newest version, whose hint the document has.
    /// </summary>
    private static string? ActiveHint(KeyDocument document) => document.Material switch
    {
        _ when !document.HasUsableKey() => null,
        { Hint: { } hint } => hint,
        { } material when material.Version == document.Version => document.Hint,
        _ => null,
    };

    private static async Task<IResult> DeleteAsync(string appId, HttpContext http, KeyStore keys, ILogger<ApiLogCategory> logger)
    {
        if (RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        bool deleted = await keys.DeleteAsync(appId, http.RequestAborted);
        Log.KeyDeleted(logger, appId, deleted);
        return deleted
            ? Results.NoContent()
            : ApiErrors.Result(StatusCodes.Status404NotFound, ErrorCodes.NoKeyConfigured, "This app has no OpenAI key to delete.");
    }

    /// <summary>
    /// Trims surrounding whitespace and returns why the key is unusable, or null. Messages never quote the key.
    /// </summary>
    public static string? CheckKeyFormat(string? apiKey, out string trimmed)
    {
        trimmed = apiKey?.Trim() ?? "";
        if (trimmed.Length == 0)
        {
            return "apiKey is missing: paste the OpenAI API key.";
        }

        if (trimmed.Length is < MinKeyLength or > MaxKeyLength)
        {
            return string.Create(CultureInfo.InvariantCulture,
                $"apiKey must be {MinKeyLength} to {MaxKeyLength} characters long; check that the whole key was pasted.");
        }

        foreach (var rune in trimmed.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(rune))
            {
                return "apiKey contains whitespace inside it; paste the key again without spaces or line breaks.";
            }

            var category = Rune.GetUnicodeCategory(rune);
            if (category is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned || rune.Value > 0x7E)
            {
                return "apiKey contains a control, invisible or non-ASCII character; paste the key again as plain text.";
            }
        }

        return ProviderKeyFormat.IsBearerCredential(trimmed)
            ? null
            : $"apiKey contains a character that API keys do not have: only {ProviderKeyFormat.AllowedCharacters}. Paste the key again.";
    }
}
