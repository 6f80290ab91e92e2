using AddOnEvents.Tests.Fixtures;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace AddOnEvents.Tests.Browser;

/// <summary>The developer console in Chromium against the running system, with a fake OpenAI behind the key check.</summary>
[Collection(BrowserCollectionDefinition.Name)]
public sealed class ConsolePageTests(BrowserFixture system)
{
    [Fact]
    public async Task SignInRegisterKeyAndSeeItTurnActive()
    {
        var app = await system.CreateAppAsync("Console active");
        string key = "sk-console-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;
        await browser.ScreenshotAsync("console-1-sign-in");

        await SignInAsync(page, app);
        await Expect(page.GetByText("No key yet")).ToBeVisibleAsync();
        await browser.ScreenshotAsync("console-2-no-key");
        await page.GetByLabel("Save a key").FillAsync(key);
        await page.GetByRole(AriaRole.Button, new() { Name = "Save key", Exact = true }).ClickAsync();

        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Active");
        await Expect(page.Locator("#status-hint")).ToContainTextAsync(key[^4..]);
        await Expect(page.Locator("#status-checked-at")).Not.ToHaveTextAsync("Not checked yet");
        await Expect(page.GetByLabel("Replace the key")).ToHaveValueAsync("");
        await Expect(page.GetByLabel("Replace the key")).ToHaveAttributeAsync("type", "password");
        Assert.DoesNotContain(key, await page.ContentAsync(), StringComparison.Ordinal);
        await browser.ScreenshotAsync("console-3-key-active");
    }

    [Fact]
    public async Task KeyTheUpstreamRejectsIsMarkedInvalidWithTheReason()
    {
        var app = await system.CreateAppAsync("Console invalid");
        string key = "sk-rejected-" + Guid.NewGuid().ToString("N");
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;

        await SignInAsync(page, app);
        await page.GetByLabel("Save a key").FillAsync(key);
        await page.GetByLabel("Save a key").PressAsync("Enter");

        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Invalid");
        await Expect(page.Locator("#status-reason")).ToContainTextAsync("OpenAI refused the key");
        await Expect(page.Locator("#status-reason code")).ToHaveTextAsync("upstream_auth_failed");
        await browser.ScreenshotAsync("console-4-key-invalid");
    }

    [Fact]
    public async Task ReplacedKeyTurnsActiveAndDeletedKeyIsGone()
    {
        var app = await system.CreateAppAsync("Console replace");
        string key = "sk-replace-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;
        await SignInAsync(page, app);
        await page.GetByLabel("Save a key").FillAsync("sk-rejected-" + Guid.NewGuid().ToString("N"));
        await page.GetByRole(AriaRole.Button, new() { Name = "Save key", Exact = true }).ClickAsync();
        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Invalid");

        await page.GetByLabel("Replace the key").FillAsync(key);
        await page.GetByRole(AriaRole.Button, new() { Name = "Replace key" }).ClickAsync();
        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Active");
        await Expect(page.Locator("#status-reason")).ToBeHiddenAsync();

        await page.GetByRole(AriaRole.Button, new() { Name = "Delete key" }).ClickAsync();
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Keep key" })).ToBeFocusedAsync();
        await browser.ScreenshotAsync("console-5-delete-confirm");
        await page.GetByRole(AriaRole.Group).GetByRole(AriaRole.Button, new() { Name = "Delete key" }).ClickAsync();
        await Expect(page.GetByText("No key yet")).ToBeVisibleAsync();
    }

    [Fact]
    public async Task ErrorsAppearNextToTheFieldThatCausedThem()
    {
        var app = await system.CreateAppAsync("Console errors");
        await using var browser = await system.OpenAsync("/console.html", width: 390, height: 844);
        var page = browser.Page;

        await SignInAsync(page, app with { Secret = "aes_wrong" }, expectSignedIn: false);
        await Expect(page.Locator("#sign-in-error")).ToContainTextAsync("do not match");
        await Expect(page.GetByLabel("App secret")).ToHaveAttributeAsync("aria-invalid", "true");

        await page.GetByLabel("App secret").FillAsync(app.Secret);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        await page.GetByLabel("Save a key").FillAsync("sk-short");
        await page.GetByRole(AriaRole.Button, new() { Name = "Save key", Exact = true }).ClickAsync();
        await Expect(page.Locator("#api-key-error")).ToContainTextAsync("characters long");
        await Expect(page.Locator("#api-key-error code")).ToHaveTextAsync("invalid_key_format");
        await Expect(page.GetByLabel("Save a key")).ToHaveAttributeAsync("aria-invalid", "true");
        await browser.ScreenshotAsync("console-6-narrow-key-error");
    }

    [Fact]
    public async Task EnterBeforeScriptLoadsSendsNoSecret()
    {
        var app = await system.CreateAppAsync("Console slow script");
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;
        // Without its script, the page is in the state a slow network leaves it in before the module runs.
        await page.RouteAsync("**/js/console.js", route => route.AbortAsync());
        await page.ReloadAsync();
        var requests = new List<string>();
        page.Request += (_, request) =>
        {
            lock (requests)
            {
                requests.Add(request.Url + " " + request.PostData);
            }
        };

        await page.GetByLabel("App id").FillAsync(app.AppId);
        await page.GetByLabel("App secret").FillAsync(app.Secret);
        await page.GetByLabel("App secret").PressAsync("Enter");
        // The key form shows only after a sign-in, which needs the script, so the test shows it itself.
        await page.Locator("#app-area").EvaluateAsync("area => { area.hidden = false; }");
        await page.GetByLabel("Save a key").FillAsync("sk-unsent");
        await page.GetByLabel("Save a key").PressAsync("Enter");
        await Task.Delay(1000);

        Assert.EndsWith("/console.html", page.Url, StringComparison.Ordinal);
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Sign in" })).ToBeDisabledAsync();
        lock (requests)
        {
            Assert.DoesNotContain(requests, request => request.Contains(app.Secret, StringComparison.Ordinal));
            Assert.DoesNotContain(requests, request => request.Contains("sk-unsent", StringComparison.Ordinal));
        }
    }

    private static async Task SignInAsync(IPage page, TestApp app, bool expectSignedIn = true)
    {
        await page.GetByLabel("App id").FillAsync(app.AppId);
        await page.GetByLabel("App secret").FillAsync(app.Secret);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        if (expectSignedIn)
        {
            await Expect(page.Locator("#signed-in-app")).ToHaveTextAsync(app.AppId);
            await Expect(page.GetByRole(AriaRole.Heading, new() { Name = "OpenAI key" })).ToBeFocusedAsync();
        }
    }
}
