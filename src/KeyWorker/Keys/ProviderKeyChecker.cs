using System.Net;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;

namespace AddOnEvents.KeyWorker.Keys;

/// <summary>The provider's verdict on a key: the state to store and, when not active, a stable reason code.</summary>
public sealed record KeyCheckResult(string State, string? ReasonCode);

/// <summary>Checks a key with one cheap authenticated call (listing models) before it is reported active.</summary>
public sealed class ProviderKeyChecker(UpstreamClientFactory upstream)
{
    public async Task<KeyCheckResult> CheckAsync(ProviderKey key, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(upstream.Options.KeyCheckTimeoutSeconds));
        try
        {
            var service = upstream.Create(key.Reveal());
            var response = await service.Models.ListModel(timeout.Token);
            if (response.Successful)
            {
                return new KeyCheckResult(KeyStates.Active, null);
            }

            return response.HttpStatusCode switch
            {
                HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => new KeyCheckResult(KeyStates.Invalid, ErrorCodes.UpstreamAuthFailed),
                HttpStatusCode.TooManyRequests => new KeyCheckResult(KeyStates.Unverified, ErrorCodes.UpstreamRateLimited),
                _ => new KeyCheckResult(KeyStates.Unverified, ErrorCodes.UpstreamUnavailable),
            };
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new KeyCheckResult(KeyStates.Unverified, ErrorCodes.UpstreamTimeout);
        }
        catch (UnusableProviderKeyException)
        {
            return new KeyCheckResult(KeyStates.Invalid, ErrorCodes.InvalidKeyFormat);
        }
        catch (HttpRequestException ex) when (ex.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            // The SDK's model listing throws on an error status instead of returning an unsuccessful response.
            return new KeyCheckResult(KeyStates.Invalid, ErrorCodes.UpstreamAuthFailed);
        }
        catch (Exception ex) when (ex is HttpRequestException or System.Text.Json.JsonException)
        {
            // An unreachable provider or a body that is not the expected JSON says nothing about the key itself.
            return new KeyCheckResult(KeyStates.Unverified, ErrorCodes.UpstreamUnavailable);
        }
    }
}
