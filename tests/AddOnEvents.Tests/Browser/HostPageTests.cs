using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace AddOnEvents.Tests.Browser;

/// <summary>
/// The host editor page, which mounts /addon/addonevents.js beside a textarea, in Chromium against the running
/// system. The demo user's allowance and switches come from the page address, as the demo host backend takes them.
/// </summary>
[Collection(BrowserCollectionDefinition.Name)]
public sealed class HostPageTests(BrowserFixture system)
{
    private const string EditorText =
        "Our team have finished the quarterly report and we think that it are ready for review by the board next week.";

    [Fact]
    public async Task AddOnAnswersOnlyAfterTheDeveloperSwitchesItOn()
    {
        await system.EnsureDemoKeyActiveAsync();
        await system.SetAddonActiveAsync(system.DemoApp, false);
        try
        {
            await using var host = await OpenHostAsync("user=" + UniqueUser("switched-off"));
            var page = host.Page;

            await AskAsync(page, "Hello before activation");

            var turn = page.Locator(".turn").Last;
            await Expect(turn).ToHaveAttributeAsync("data-state", "failed");
            await Expect(turn.Locator(".answer-error")).ToContainTextAsync("switched off for this app");
            await Expect(turn.Locator(".answer-error code")).ToHaveTextAsync("addon_inactive");
            await host.ScreenshotAsync("host-1-addon-inactive");

            await using var console = await system.OpenAsync("/console.html");
            await SignInToConsoleAsync(console.Page);
            var addonSwitch = console.Page.GetByRole(AriaRole.Switch, new() { Name = "Add-on switched on" });
            await Expect(addonSwitch).Not.ToBeCheckedAsync();
            await addonSwitch.CheckAsync();
            await Expect(console.Page.Locator("#addon-active-state")).ToHaveTextAsync("On");
            await console.ScreenshotAsync("console-addon-switched-on");

            await page.GetByRole(AriaRole.Button, new() { Name = "Regenerate" }).ClickAsync();

            await Expect(page.Locator(".turn").Last).ToHaveAttributeAsync("data-state", "answered");
            await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: Hello before activation");
        }
        finally
        {
            await system.SetAddonActiveAsync(system.DemoApp, true);
        }
    }

    [Fact]
    public async Task DisabledUserIsToldTheAddOnIsOffForThem()
    {
        await system.EnsureDemoKeyActiveAsync();
        await using var host = await OpenHostAsync($"user={UniqueUser("disabled")}&addonDisabled=true", width: 390, height: 844);
        var page = host.Page;

        await AskAsync(page, "Can I still ask?");

        var turn = page.Locator(".turn").Last;
        await Expect(turn).ToHaveAttributeAsync("data-state", "failed");
        await Expect(turn.Locator(".answer-error")).ToContainTextAsync("switched off for your account");
        await Expect(turn.Locator(".answer-error code")).ToHaveTextAsync("addon_disabled_for_user");
        await host.ScreenshotAsync("host-2-narrow-user-disabled");
    }

    [Fact]
    public async Task ExhaustedAllowanceRefusesTheNextPrompt()
    {
        await system.EnsureDemoKeyActiveAsync();
        system.Upstream.Enqueue(ScriptedResponse.Answer("That used the whole allowance.") with { Usage = new ScriptedUsage(4, 8, 12) });
        await using var host = await OpenHostAsync($"user={UniqueUser("thrifty")}&allowance=10");
        var page = host.Page;
        await AskAsync(page, "Spend my allowance.");
        await Expect(page.Locator(".turn").Last).ToHaveAttributeAsync("data-state", "answered");
        await Expect(page.Locator(".aoe-usage")).ToHaveTextAsync("This month: 12 tokens used, 0 left of 10.");

        await AskAsync(page, "One more, please.");

        var turn = page.Locator(".turn").Last;
        await Expect(turn).ToHaveAttributeAsync("data-state", "failed");
        await Expect(turn.Locator(".answer-error code")).ToHaveTextAsync("quota_exceeded");
        await Expect(turn.Locator(".answer-error")).ToContainTextAsync("allowance");
        Assert.Equal(0, system.Upstream.Requests.Count(r => r.LastUserMessage == "One more, please."));
        await host.ScreenshotAsync("host-3-allowance-exhausted");
    }

    [Fact]
    public async Task CrossingTheThresholdRaisesTheEventTheHostShows()
    {
        await system.EnsureDemoKeyActiveAsync();
        system.Upstream.Enqueue(ScriptedResponse.Answer("A long answer.") with { Usage = new ScriptedUsage(20, 40, 60) });
        await using var host = await OpenHostAsync($"user={UniqueUser("heavy")}&allowance=100&threshold=50");
        var page = host.Page;

        await AskAsync(page, "Use more than half.");

        await Expect(page.Locator(".turn").Last).ToHaveAttributeAsync("data-state", "answered");
        await Expect(page.Locator("#allowance-banner")).ToHaveTextAsync("Heads up: this user has used 60 of 100 tokens this month.");
        await Expect(page.Locator(".aoe-threshold")).ToContainTextAsync("60 of your 100 tokens");
        await Expect(page.Locator(".aoe-usage")).ToHaveTextAsync("This month: 60 tokens used, 40 left of 100.");
        await host.ScreenshotAsync("host-4-threshold");
    }

    [Fact]
    public async Task ShortenOnSelectedTextIsInsertedIntoTheEditor()
    {
        await system.EnsureDemoKeyActiveAsync();
        const string Shorter = "The quarterly report is ready for the board.";
        system.Upstream.Enqueue(ScriptedResponse.Answer(Shorter));
        await using var host = await OpenHostAsync("user=" + UniqueUser("writer"));
        var page = host.Page;
        var editor = page.GetByLabel("Your text");
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Shorten" })).ToBeDisabledAsync();

        await editor.SelectTextAsync();
        await Expect(page.Locator(".aoe-selection")).ToHaveTextAsync(EditorText);
        await page.GetByRole(AriaRole.Button, new() { Name = "Shorten" }).ClickAsync();

        var turn = page.Locator(".turn").Last;
        await Expect(turn).ToHaveAttributeAsync("data-state", "answered");
        await Expect(turn.Locator(".answer-text")).ToHaveTextAsync(Shorter);
        await host.ScreenshotAsync("host-5-shortened");
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == EditorText, BrowserFixture.Timeout);
        Assert.Contains("Shorten", upstream.Messages[0].Content, StringComparison.Ordinal);

        await turn.GetByRole(AriaRole.Button, new() { Name = "Insert" }).ClickAsync();

        await Expect(editor).ToHaveValueAsync(Shorter);
        await host.ScreenshotAsync("host-6-inserted");
    }

    [Fact]
    public async Task RegenerateSendsTheLastInputAgain()
    {
        await system.EnsureDemoKeyActiveAsync();
        system.Upstream.Enqueue(ScriptedResponse.Answer("Blue."));
        system.Upstream.Enqueue(ScriptedResponse.Answer("Green."));
        await using var host = await OpenHostAsync("user=" + UniqueUser("undecided"));
        var page = host.Page;
        var regenerate = page.GetByRole(AriaRole.Button, new() { Name = "Regenerate" });
        await Expect(regenerate).ToBeDisabledAsync();
        await AskAsync(page, "Name a colour.");
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Blue.");

        await regenerate.ClickAsync();

        await Expect(page.Locator(".turn")).ToHaveCountAsync(2);
        await Expect(page.Locator(".turn").Last.Locator(".turn-question")).ToContainTextAsync("Name a colour.");
        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Green.");
        Assert.Equal(2, system.Upstream.Requests.Count(r => r.LastUserMessage == "Name a colour."));
        await host.ScreenshotAsync("host-7-regenerated");
    }

    [Fact]
    public async Task AddOnAnswersOnPageOfAnotherOrigin()
    {
        await system.EnsureDemoKeyActiveAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(system.DemoApp));
        using var issued = await developer.PostAsJsonAsync($"/api/apps/{system.DemoApp.AppId}/user-tokens",
            new { userId = UniqueUser("elsewhere"), ttlSeconds = 600 });
        string token = (await issued.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
        string html = $$"""
            <!doctype html>
            <html lang="en"><head><title>Another site's editor</title></head>
            <body>
              <div id="assistant"></div>
              <script src="{{system.IngressUrl}}addon/addonevents.js"></script>
              <script>AddOnEvents.mount(document.getElementById("assistant"), { getToken: async () => "{{token}}", locale: "en-US" });</script>
            </body></html>
            """;

        await using var host = await system.OpenOnHostPageOriginAsync(html);
        var page = host.Page;
        await Expect(page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        await AskAsync(page, "Hello from another site");

        await Expect(page.Locator(".turn").Last.Locator(".answer-text")).ToHaveTextAsync("Echo: Hello from another site");

        // The usage line comes from a plain cross-origin request, which the browser completes only for an allowed origin.
        await Expect(page.Locator(".aoe-usage")).ToContainTextAsync("tokens used");
        Assert.Equal(system.HostPageOrigin, await page.EvaluateAsync<string>("location.origin"));
    }

    private static string UniqueUser(string name) => $"{name}-{Guid.NewGuid():N}";

    private async Task<BrowserPage> OpenHostAsync(string query, int width = 1280, int height = 860)
    {
        var host = await system.OpenAsync("/host.html?" + query, width, height);
        await Expect(host.Page.Locator(".addon-connection-text")).ToHaveTextAsync("Connected");
        return host;
    }

    private async Task SignInToConsoleAsync(IPage page)
    {
        await page.GetByLabel("App id").FillAsync(system.DemoApp.AppId);
        await page.GetByLabel("App secret").FillAsync(system.DemoApp.Secret);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        await Expect(page.Locator("#addon-active-state")).ToHaveTextAsync("Off");
    }

    private static async Task AskAsync(IPage page, string question)
    {
        await page.GetByLabel("Ask the assistant").FillAsync(question);
        await page.GetByRole(AriaRole.Button, new() { Name = "Send" }).ClickAsync();
        await Expect(page.Locator(".turn-question").Last).ToContainTextAsync(question);
    }
}
