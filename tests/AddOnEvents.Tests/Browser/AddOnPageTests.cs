using System.Net.Http.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace AddOnEvents.Tests.Browser;

/// <summary>
/// The add-on demo page in Chromium against the running system. The page gets its token from the demo host backend
/// and talks to the hub; the fake upstream scripts the answers.
/// </summary>
[Collection(BrowserCollectionDefinition.Name)]
public sealed class AddOnPageTests(BrowserFixture system)
{
    // Records every text the answers show, so a test can tell whether an answer grew piece by piece.
    private const string RecordAnswerTexts = """
        () => {
          window.__answerTexts = [];
          new MutationObserver(() => {
            for (const element of document.querySelectorAll('.answer-text')) {
              const last = window.__answerTexts[window.__answerTexts.length - 1];
              if (element.textContent !== last) window.__answerTexts.push(element.textContent);
            }
          }).observe(document.querySelector('.conversation'), { subtree: true, childList: true, characterData: true });
        }
        """;

    // Keeps the page's WebSockets reachable from test script, so a test can drop the connection.
    private const string TrackWebSockets = """
        (() => {
          const Native = window.WebSocket;
          window.__sockets = [];
          window.WebSocket = class extends Native {
            constructor(...args) { super(...args); window.__sockets.push(this); }
          };
        })();
        """;

    [Fact]
    public async Task AnswerGrowsAndEndsWithUsageUsingTheKeyboardOnly()
    {
        await system.EnsureDemoKeyActiveAsync();
        string[] pieces = ["Streams ", "arrive ", "in ", "ordered ", "pieces ", "and ", "end ", "with ", "usage."];
        system.Upstream.Enqueue(ScriptedResponse.Streamed(pieces, TimeSpan.FromMilliseconds(150)) with
        {
            Usage = new ScriptedUsage(12, 9, 21),
        });
        await using var browser = await system.OpenAsync("/addon.html");
        var page = browser.Page;

        // Keyboard only: Tab to the user id field, type, Enter; the prompt box then has focus.
        await TabToAsync(page, "user-id");
        await Expect(page.GetByLabel("End-user id")).ToBeFocusedAsync();
        Assert.NotEqual("none", await page.EvaluateAsync<string>("() => getComputedStyle(document.activeElement).outlineStyle"));
        await page.Keyboard.TypeAsync("keyboard-user");
        await page.Keyboard.PressAsync("Enter");
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        await Expect(page.GetByLabel("Ask the assistant")).ToBeFocusedAsync();
        await page.EvaluateAsync(RecordAnswerTexts);
        await page.Keyboard.TypeAsync("How do streamed answers arrive?");
        await page.Keyboard.PressAsync("Control+Enter");

        var turn = page.Locator(".turn").Last;
        await Expect(turn).ToHaveAttributeAsync("data-state", "answered");
        await Expect(turn.Locator(".answer-text")).ToHaveTextAsync(string.Concat(pieces));
        await Expect(turn.Locator(".answer-meta")).ToHaveTextAsync("21 tokens (12 in, 9 out)");
        await Expect(page.Locator(".addon-announcer")).ToContainTextAsync("Answer complete");
        await browser.ScreenshotAsync("addon-2-answered");

        // The answer grows piece by piece whenever the pipeline streams from the upstream; a server that asks the
        // upstream for the whole answer at once can only show it whole.
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(
            r => r.LastUserMessage == "How do streamed answers arrive?", BrowserFixture.Timeout);
        string[] shown = await page.EvaluateAsync<string[]>("() => window.__answerTexts");
        if (upstreamRequest.Stream)
        {
            Assert.True(shown.Length >= 3, "The answer did not grow piece by piece: " + string.Join(" | ", shown));
            Assert.All(shown, text => Assert.StartsWith(text, string.Concat(pieces), StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task StopEndsTheAnswerBeingWritten()
    {
        await system.EnsureDemoKeyActiveAsync();
        var pieces = Enumerable.Range(1, 40).Select(i => $"word{i} ").ToArray();
        system.Upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromSeconds(1),
            ScriptedResponse.Streamed(pieces, TimeSpan.FromMilliseconds(200))));
        await using var browser = await system.OpenAsync("/addon.html");
        var page = browser.Page;
        await StartSessionAsync(page, "stopping-user");

        await AskAsync(page, "Write forty words slowly.");
        var turn = page.Locator(".turn").Last;
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(
            r => r.LastUserMessage == "Write forty words slowly.", BrowserFixture.Timeout);
        if (upstreamRequest.Stream)
        {
            await Expect(turn).ToHaveAttributeAsync("data-state", "streaming");
            await browser.ScreenshotAsync("addon-1-streaming");
        }

        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Stop" })).ToBeEnabledAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Stop" }).ClickAsync();

        await Expect(turn).ToHaveAttributeAsync("data-state", "stopped");
        await Expect(turn.Locator(".badge")).ToHaveTextAsync("Stopped");
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Stop" })).ToBeDisabledAsync();
        await Expect(page.GetByLabel("Ask the assistant")).ToBeFocusedAsync();
        string stoppedText = await turn.Locator(".answer-text").TextContentAsync() ?? "";
        await upstreamRequest.Completion.WaitAsync(BrowserFixture.Timeout);
        await Task.Delay(500);
        await Expect(turn).ToHaveAttributeAsync("data-state", "stopped");
        Assert.Equal(stoppedText, await turn.Locator(".answer-text").TextContentAsync() ?? "");
        Assert.NotEqual(string.Concat(pieces), stoppedText);
        await browser.ScreenshotAsync("addon-3-stopped");

        // Esc stops too, and the page takes a new question after a stop.
        system.Upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("Too late.")));
        await AskAsync(page, "Stop this one with Escape.");
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == "Stop this one with Escape.", BrowserFixture.Timeout);
        await page.Keyboard.PressAsync("Escape");
        await Expect(page.Locator(".turn").Last).ToHaveAttributeAsync("data-state", "stopped");
    }

    [Theory]
    [InlineData("@app")]
    [InlineData("..")]
    public async Task DemoTokenRejectsReservedUserIds(string userId)
    {
        using var http = system.CreateClient();

        using var response = await http.PostAsJsonAsync("/demo/token", new { userId });

        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", (await response.Content.ReadFromJsonAsync<System.Text.Json.JsonElement>()).GetProperty("code").GetString());
    }

    [Fact]
    public async Task MissingKeyIsExplainedToTheUser()
    {
        // The add-on must be on, or the prompt stops at addon_inactive before the missing key matters. Switching it on
        // needs an active key, so the key goes after.
        await system.EnsureDemoKeyActiveAsync();
        await system.DeleteDemoKeyAsync();
        await using var browser = await system.OpenAsync("/addon.html");
        var page = browser.Page;
        await StartSessionAsync(page, "keyless-user");

        await AskAsync(page, "Is anyone there?");

        var turn = page.Locator(".turn").Last;
        await Expect(turn).ToHaveAttributeAsync("data-state", "failed");
        await Expect(turn.Locator(".answer-error")).ToContainTextAsync("The assistant is not set up yet");
        await Expect(turn.Locator(".answer-error code")).ToHaveTextAsync("no_key_configured");
        await browser.ScreenshotAsync("addon-4-no-key");
    }

    [Fact]
    public async Task RateLimitIsExplainedToTheUser()
    {
        await system.EnsureDemoKeyActiveAsync();
        // Every attempt at this question is refused, however often the pipeline retries a 429.
        system.Upstream.Responder = request =>
            request.LastUserMessage == "One more, quickly." ? ScriptedResponse.RateLimited("7") : null;
        try
        {
            await using var browser = await system.OpenAsync("/addon.html", width: 390, height: 844);
            var page = browser.Page;
            await StartSessionAsync(page, "hurried-user");

            await AskAsync(page, "One more, quickly.");

            var turn = page.Locator(".turn").Last;
            await Expect(turn).ToHaveAttributeAsync("data-state", "failed");
            await Expect(turn.Locator(".answer-error")).ToContainTextAsync("OpenAI is receiving too many requests from this app.");
            await Expect(turn.Locator(".answer-error code")).ToHaveTextAsync("upstream_rate_limited");
            await browser.ScreenshotAsync("addon-5-narrow-rate-limited");
        }
        finally
        {
            system.Upstream.Responder = null;
        }
    }

    [Fact]
    public async Task DroppedConnectionShowsReconnectingThenRecovers()
    {
        await system.EnsureDemoKeyActiveAsync();
        system.Upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("Answered while you were away.")));
        await using var browser = await system.OpenAsync("/addon.html");
        var page = browser.Page;
        await page.AddInitScriptAsync(TrackWebSockets);
        await page.ReloadAsync();
        await StartSessionAsync(page, "travelling-user");

        // The answer is written while the page is offline, so it cannot arrive over the hub.
        await AskAsync(page, "Answer this while I am offline.");
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(
            r => r.LastUserMessage == "Answer this while I am offline.", BrowserFixture.Timeout);
        var turn = page.Locator(".turn").Last;
        // Waiting means the page holds the request id, so it can ask for the answer after the reconnect.
        await Expect(turn).ToHaveAttributeAsync("data-state", "waiting");
        await browser.Context.SetOfflineAsync(true);
        await page.EvaluateAsync("() => window.__sockets.forEach(socket => socket.close())");
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Reconnecting…");
        await Expect(page.Locator(".addon-connection-detail")).ToContainTextAsync("The connection dropped");
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Send" })).ToBeDisabledAsync();
        await browser.ScreenshotAsync("addon-6-reconnecting");
        await upstreamRequest.Completion.WaitAsync(BrowserFixture.Timeout);
        await Task.Delay(1000);

        var recovery = page.WaitForResponseAsync(r => r.Url.Contains("/api/prompts/", StringComparison.Ordinal));
        await browser.Context.SetOfflineAsync(false);

        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        await Expect(page.Locator(".addon-connection-detail")).ToBeHiddenAsync();
        var response = await recovery.WaitAsync(BrowserFixture.Timeout);
        if (response.Status == 200)
        {
            await Expect(turn).ToHaveAttributeAsync("data-state", "answered");
            await Expect(turn.Locator(".answer-text")).ToHaveTextAsync("Answered while you were away.");
        }
        else
        {
            // A server that keeps no copy answers 404; the page then says so instead of waiting silently.
            Assert.Equal(404, response.Status);
            await Expect(turn.Locator(".answer-note")).ToContainTextAsync("the server kept no copy");
            await page.GetByRole(AriaRole.Button, new() { Name = "Stop" }).ClickAsync();
        }

        await AskAsync(page, "Are you back?");
        await Expect(page.Locator(".turn").Last).ToHaveAttributeAsync("data-state", "answered");
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: Are you back?");
        await browser.ScreenshotAsync("addon-7-reconnected");
    }

    [Fact]
    public async Task TokenComesFromTheHostBackendAndIsRenewedBeforeItExpires()
    {
        await system.EnsureDemoKeyActiveAsync();
        await using var browser = await system.OpenAsync("/addon.html");
        var page = browser.Page;
        await Expect(page.GetByLabel("Ask the assistant")).ToBeDisabledAsync();
        await Expect(page.GetByLabel("App secret")).ToHaveCountAsync(0);
        await browser.ScreenshotAsync("addon-0-no-session");
        var firstToken = page.WaitForResponseAsync(r => r.Url.EndsWith("/demo/token", StringComparison.Ordinal));

        await StartSessionAsync(page, "careful-user");
        var firstConnected = DateTime.UtcNow;

        var first = await firstToken.WaitAsync(BrowserFixture.Timeout);
        Assert.Equal(200, first.Status);
        Assert.DoesNotContain(system.DemoApp.Secret, await first.TextAsync(), StringComparison.Ordinal);
        Assert.DoesNotContain(system.DemoApp.Secret, await page.ContentAsync(), StringComparison.Ordinal);
        string firstInfo = await page.Locator("#session-info").InnerTextAsync();
        Assert.Contains("renews itself", firstInfo, StringComparison.Ordinal);

        // The fixture issues 30-second tokens, so the page asks for the next one after about 24 seconds.
        var renewed = await page.WaitForResponseAsync(
            r => r.Url.EndsWith("/demo/token", StringComparison.Ordinal),
            new() { Timeout = (float)BrowserFixture.Timeout.TotalMilliseconds });
        Assert.Equal(200, renewed.Status);
        await Expect(page.Locator("#session-info")).Not.ToHaveTextAsync(firstInfo);
        await Expect(page.Locator("#session-warning")).ToBeHiddenAsync();
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        await AskAsync(page, "Still there after the renewal?");
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: Still there after the renewal?");

        // Ingress closes a hub connection when the token it was opened with expires; the page opens the next one
        // with the renewed token.
        var firstExpiry = firstConnected + TimeSpan.FromSeconds(32);
        if (firstExpiry > DateTime.UtcNow)
        {
            await Task.Delay(firstExpiry - DateTime.UtcNow);
        }

        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        await AskAsync(page, "Still there after the first token expired?");
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: Still there after the first token expired?");
    }

    private static async Task StartSessionAsync(IPage page, string userId)
    {
        await page.GetByLabel("End-user id").FillAsync(userId);
        await page.GetByRole(AriaRole.Button, new() { Name = "Start session" }).ClickAsync();
        await Expect(page.Locator("#session-user")).ToHaveTextAsync(userId);
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
    }

    private static async Task AskAsync(IPage page, string question)
    {
        await page.GetByLabel("Ask the assistant").FillAsync(question);
        await page.GetByRole(AriaRole.Button, new() { Name = "Send" }).ClickAsync();
        await Expect(page.Locator(".turn-question").Last).ToContainTextAsync(question);
    }

    /// <summary>Presses Tab until the element with <paramref name="id"/> has focus, as a keyboard user would.</summary>
    private static async Task TabToAsync(IPage page, string id)
    {
        for (int presses = 0; presses < 10; presses++)
        {
            await page.Keyboard.PressAsync("Tab");
            if (await page.EvaluateAsync<string?>("() => document.activeElement?.id") == id)
            {
                return;
            }
        }

        Assert.Fail($"Ten presses of Tab did not reach #{id}.");
    }
}
