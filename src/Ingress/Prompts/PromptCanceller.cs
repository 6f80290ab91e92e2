using System.Security.Claims;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using MassTransit;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Broadcasts a user's cancel to every PromptWorker. It names the app and user from the verified token, and a
/// worker stops the request only if both match, so nobody can stop another user's answer.
/// </summary>
public sealed class PromptCanceller(IBus bus, UserTokens tokens, TimeProvider clock)
{
    public async Task CancelAsync(ClaimsPrincipal user, Guid requestId, CancellationToken cancellationToken)
    {
        string? appId = user.FindFirstValue(AuthSchemes.AppIdClaim);
        string? pseudonym = tokens.Pseudonym(user);
        if (appId is null || pseudonym is null)
        {
            return;
        }

        await bus.Publish(new PromptCancelled(requestId, requestId, appId, pseudonym, clock.GetUtcNow()),
            publish => publish.TimeToLive = TimeSpan.FromMinutes(1), cancellationToken);
    }
}
