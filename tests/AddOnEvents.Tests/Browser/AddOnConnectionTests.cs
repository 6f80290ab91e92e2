using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace AddOnEvents.Tests.Browser;

/// <summary>
/// How the embedded add-on (/addon/addonevents.js) handles connections the server closes or rejects, on a host page of
/// another origin whose getToken the test controls.
/// </summary>
[Collection(BrowserCollectionDefinition.Name)]
public sealed class AddOnConnectionTests(BrowserFixture system)
{
    // Ingress's default Prompts:MaxConnectionsPerUser, which the browser fixture keeps.
    private const int MaxConnectionsPerUser = 20;

    // Longer than any test, so the add-on never renews a token on its own schedule.
    private const int TokenLifetimeSeconds = 600;

    [Fact]
    public async Task TooManyConnectionsShowServerMessage()
    {
        var app = await system.CreateAppAsync("Many tabs");
        string token = await IssueTokenAsync(app, UniqueUser("many-tabs"));
        var open = new List<AddOnClient>();
        try
        {
            for (int i = 0; i < MaxConnectionsPerUser; i++)
            {
                open.Add(await system.ConnectAsync(token));
            }

            await using var host = await system.OpenOnHostPageOriginAsync(HostPage($"\"{token}\""));
            var page = host.Page;
            var detail = page.Locator(".addon-connection-detail");

            await Expect(detail).ToContainTextAsync($"You have {MaxConnectionsPerUser} connections open already.");
            await Expect(detail).ToContainTextAsync("The assistant tries again in 30 s.");
            await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Not connected");
            await host.ScreenshotAsync("addon-8-too-many-connections");
            int socketsAfterRejection = await page.EvaluateAsync<int>("() => window.__sockets.length");
            await Task.Delay(TimeSpan.FromSeconds(5));
            int socketsLater = await page.EvaluateAsync<int>("() => window.__sockets.length");
            Assert.Equal(socketsAfterRejection, socketsLater);
            await Expect(page.Locator(".field-error")).ToBeHiddenAsync();
            await Expect(page.Locator(".turn")).ToHaveCountAsync(0);
            Assert.Equal(0, await page.EvaluateAsync<int>("() => window.__errors.length"));

            // A closed tab frees a place, and the next slow attempt takes it.
            await open[0].DisposeAsync();
            open.RemoveAt(0);
            await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
            await Expect(detail).ToBeHiddenAsync();
        }
        finally
        {
            foreach (var client in open)
            {
                await client.DisposeAsync();
            }
        }
    }

    // NOTE: the attempt after the close gets the revoked token or the new one, depending on timing. On a loaded machine
    // it can get the new one, which is the case ServerCloseReconnectsWithOneSocket tests on every run.
    [Fact]
    public async Task RevokedSecretFetchesNewToken()
    {
        var app = await system.CreateAppAsync("Rotating host");
        await system.RegisterActiveKeyAsync(app, "sk-rotating-" + Guid.NewGuid().ToString("N"));
        string userId = UniqueUser("rotated");
        string oldToken = await IssueTokenAsync(app, userId);
        await using var host = await system.OpenOnHostPageOriginAsync(HostPage("window.__nextToken", $"\"{oldToken}\""));
        var page = host.Page;
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        Assert.Equal(1, await page.EvaluateAsync<int>("() => window.__tokenRequests"));

        string newToken = await RotateSecretAsync(app, userId);

        // Until the host has a token from the new secret, getToken keeps returning the revoked one.
        await Expect(page.Locator(".addon-connection-text")).Not.ToHaveTextAsync("Connected");
        await page.EvaluateAsync("token => { window.__nextToken = token; }", newToken);

        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        Assert.True(await page.EvaluateAsync<int>("() => window.__tokenRequests") >= 2, "getToken was not called after the revocation.");
        await AskAndExpectEchoAsync(page, "Still there after the rotation?");
    }

    // A start made from inside the SignalR client's onclose lost its transport, so its WebSocket sent no hub handshake
    // and stayed open until the server's handshake timeout. The page then threw "Handshake was canceled.".
    [Fact]
    public async Task ServerCloseReconnectsWithOneSocket()
    {
        var app = await system.CreateAppAsync("Closed by the server");
        await system.RegisterActiveKeyAsync(app, "sk-closed-" + Guid.NewGuid().ToString("N"));
        string userId = UniqueUser("closed");
        string oldToken = await IssueTokenAsync(app, userId);

        // After the first call, getToken waits for the test's new token, so the first attempt after the close uses it.
        string waitForNewToken = $$"""
            window.__tokenRequests === 1 ? window.__nextToken : new Promise((resolve) => {
              const poll = () => window.__nextToken !== "{{oldToken}}" ? resolve(window.__nextToken) : setTimeout(poll, 20);
              poll();
            })
            """;
        await using var host = await system.OpenOnHostPageOriginAsync(HostPage(waitForNewToken, $"\"{oldToken}\""));
        var page = host.Page;
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        int socketsBeforeClose = await page.EvaluateAsync<int>("() => window.__sockets.length");

        // The rotation makes the server close the connection with a Close message.
        string newToken = await RotateSecretAsync(app, userId);
        await Expect(page.Locator(".addon-connection-text")).Not.ToHaveTextAsync("Connected");
        await page.EvaluateAsync("token => { window.__nextToken = token; }", newToken);

        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        Assert.Equal(socketsBeforeClose + 1, await page.EvaluateAsync<int>("() => window.__sockets.length"));
        await AskAndExpectEchoAsync(page, "Back after the close?");
    }

    private static string UniqueUser(string name) => $"{name}-{Guid.NewGuid():N}";

    /// <summary>Sends a prompt through the add-on and waits for the fake upstream's echo of it.</summary>
    private static async Task AskAndExpectEchoAsync(IPage page, string prompt)
    {
        await page.GetByLabel("Ask the assistant").FillAsync(prompt);
        await page.GetByRole(AriaRole.Button, new() { Name = "Send" }).ClickAsync();
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: " + prompt);
    }

    /// <summary>
    /// Replaces the app's secret with no grace period, which closes the connections opened with its tokens, and
    /// returns a token for the user from the new secret.
    /// </summary>
    private async Task<string> RotateSecretAsync(TestApp app, string userId)
    {
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using var rotated = await admin.PostAsJsonAsync($"/api/admin/apps/{app.AppId}/secrets", new { graceSeconds = 0 });
        Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        string newSecret = (await rotated.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("appSecret").GetString()!;
        return await IssueTokenAsync(app with { Secret = newSecret }, userId);
    }

    private async Task<string> IssueTokenAsync(TestApp app, string userId)
    {
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var issued = await developer.PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens",
            new { userId, ttlSeconds = TokenLifetimeSeconds });
        Assert.Equal(HttpStatusCode.OK, issued.StatusCode);
        return (await issued.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    /// <summary>
    /// Returns a host page that mounts the add-on with a getToken returning <paramref name="tokenExpression"/>, after
    /// setting window.__nextToken to <paramref name="firstToken"/>. The page counts getToken calls, keeps its
    /// WebSockets and records the add-on's error events.
    /// </summary>
    private string HostPage(string tokenExpression, string firstToken = "null") => $$"""
        <!doctype html>
        <html lang="en"><head><title>Another site's editor</title></head>
        <body>
          <div id="assistant"></div>
          <script>
            window.__sockets = [];
            const NativeWebSocket = window.WebSocket;
            window.WebSocket = class extends NativeWebSocket {
              constructor(...args) { super(...args); window.__sockets.push(this); }
            };
            window.__tokenRequests = 0;
            window.__nextToken = {{firstToken}};
            window.__errors = [];
          </script>
          <script src="{{system.IngressUrl}}addon/addonevents.js"></script>
          <script>
            const addon = AddOnEvents.mount(document.getElementById("assistant"), {
              getToken: async () => { window.__tokenRequests++; return {{tokenExpression}}; },
              locale: "en-US",
            });
            addon.on("error", (error) => window.__errors.push(error));
          </script>
        </body></html>
        """;
}
