using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
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

    [Fact]
    public async Task LimitsFormSavesAndShowsLimitsInForce()
    {
        var app = await system.CreateAppAsync("Console limits");
        // The operator's max output tokens is lower than the developer's value below, so the operator's stays in force.
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using (var operatorLimits = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { maxOutputTokens = 300 }))
        {
            Assert.Equal(HttpStatusCode.OK, operatorLimits.StatusCode);
        }

        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;
        await SignInAsync(page, app);
        var tokensPerDay = page.GetByLabel("Tokens per day, whole app");
        var maxOutputTokens = page.GetByLabel("Max output tokens per answer");
        var allowedModels = page.GetByLabel("Allowed models");
        var saveButton = page.GetByRole(AriaRole.Button, new() { Name = "Save limits" });
        await Expect(page.Locator("#limit-max-output-tokens-effective"))
            .ToHaveTextAsync("Applies: 300 tokens per answer at most, the operator's limit");
        await Expect(page.Locator("#limit-tokens-per-day-effective")).ToHaveTextAsync("Applies: no limit");
        await Expect(tokensPerDay).ToHaveValueAsync("");
        await Expect(saveButton).ToBeEnabledAsync();

        await tokensPerDay.FillAsync("900");
        await maxOutputTokens.FillAsync("800");
        await allowedModels.FillAsync(" gpt-4o-mini ,gpt-4o, ");
        await saveButton.ClickAsync();

        await Expect(page.Locator("#limits-status")).ToContainTextAsync("Limits saved");
        await Expect(tokensPerDay).ToHaveValueAsync("900");
        await Expect(maxOutputTokens).ToHaveValueAsync("800");
        await Expect(allowedModels).ToHaveValueAsync("gpt-4o-mini, gpt-4o");
        await Expect(page.Locator("#limit-tokens-per-day-effective")).ToHaveTextAsync("Applies: 900 tokens a day, your limit");
        await Expect(page.Locator("#limit-max-output-tokens-effective"))
            .ToHaveTextAsync("Applies: 300 tokens per answer at most, the operator's limit");
        await Expect(page.Locator("#limit-allowed-models-effective")).ToHaveTextAsync("Applies: gpt-4o-mini, gpt-4o, your list");
        await Expect(page.Locator("#limit-tokens-per-month-effective")).ToHaveTextAsync("Applies: no limit");
        await browser.ScreenshotAsync("console-7-limits-saved");

        using var developer = system.CreateClient(SystemFixture.Basic(app));
        var saved = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/limits");
        var own = saved.GetProperty("limits");
        var effective = saved.GetProperty("effective");
        Assert.Equal(900, own.GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(800, own.GetProperty("maxOutputTokens").GetInt32());
        Assert.Equal(["gpt-4o-mini", "gpt-4o"], own.GetProperty("allowedModels").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(JsonValueKind.Null, own.GetProperty("tokensPerMonth").ValueKind);
        Assert.Equal(900, effective.GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(300, effective.GetProperty("maxOutputTokens").GetInt32());
        Assert.Equal(["gpt-4o-mini", "gpt-4o"], effective.GetProperty("allowedModels").EnumerateArray().Select(m => m.GetString()));

        await tokensPerDay.FillAsync("0");
        await saveButton.ClickAsync();

        await Expect(page.Locator("#limits-error")).ToContainTextAsync("tokensPerDay must be a whole number from 1 to");
        await Expect(page.Locator("#limits-error code")).ToHaveTextAsync("invalid_request");
        await Expect(page.Locator("#limits-status")).ToBeEmptyAsync();
        await Expect(page.Locator("#limit-tokens-per-day-effective")).ToHaveTextAsync("Applies: 900 tokens a day, your limit");
        await Expect(saveButton).ToBeEnabledAsync();
        await browser.ScreenshotAsync("console-8-limits-rejected");
        var afterRejected = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/limits");
        Assert.Equal(900, afterRejected.GetProperty("limits").GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(900, afterRejected.GetProperty("effective").GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(800, afterRejected.GetProperty("limits").GetProperty("maxOutputTokens").GetInt32());
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
