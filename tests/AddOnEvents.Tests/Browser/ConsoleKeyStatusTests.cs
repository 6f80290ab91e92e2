using System.Net;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace AddOnEvents.Tests.Browser;

/// <summary>How the developer console describes a rejected replacement and the key that keeps serving.</summary>
[Collection(BrowserCollectionDefinition.Name)]
public sealed class ConsoleKeyStatusTests(BrowserFixture system)
{
    [Fact]
    public async Task RejectedReplacementNamesKeyInUse()
    {
        var app = await system.CreateAppAsync("Console rejected replacement");
        await system.RegisterActiveKeyAsync(app, "sk-console-good-" + Guid.NewGuid().ToString("N"));
        using (var mistyped = await system.PutKeyAsync(app, "sk-console-mistyped-" + Guid.NewGuid().ToString("N")))
        {
            Assert.Equal(HttpStatusCode.Accepted, mistyped.StatusCode);
        }

        await system.WaitForKeyStateAsync(app, "invalid");
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;

        await page.GetByLabel("App id").FillAsync(app.AppId);
        await page.GetByLabel("App secret").FillAsync(app.Secret);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();

        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Invalid");
        await Expect(page.Locator("#status-state-description")).ToContainTextAsync("keeps using version 1");
        await Expect(page.Locator("#status-version")).ToHaveTextAsync("2 (the add-on still uses version 1)");
        await Expect(page.Locator("#status-reason code")).ToHaveTextAsync("upstream_auth_failed");
    }

    // KeyLifecycleTests produces this status with a real rejection, and the status given here copies its fields.
    [Fact]
    public async Task RejectedKeyPendingReplacementWarns()
    {
        var app = await system.CreateAppAsync("Console rejected key");
        await system.RegisterActiveKeyAsync(app, "sk-console-rejected-" + Guid.NewGuid().ToString("N"));
        await using var browser = await system.OpenAsync("/console.html");
        var page = browser.Page;
        string status = $$"""
            {"appId": "{{app.AppId}}", "version": 2, "state": "pending", "hint": "sk-...abcd", "reasonCode": "upstream_auth_failed",
             "updatedAt": "2026-01-01T00:00:00Z", "checkedAt": "2026-01-01T00:00:00Z", "activeVersion": null, "activeHint": null,
             "rejectedVersion": 1}
            """;
        await page.RouteAsync($"**/api/apps/{app.AppId}/openai-key", route => route.Request.Method == "GET"
            ? route.FulfillAsync(new() { Status = 200, ContentType = "application/json", Body = status })
            : route.ContinueAsync());

        await page.GetByLabel("App id").FillAsync(app.AppId);
        await page.GetByLabel("App secret").FillAsync(app.Secret);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();

        await Expect(page.Locator("#status-state")).ToHaveTextAsync("Checking");
        await Expect(page.Locator("#status-state-description")).ToHaveTextAsync(
            "OpenAI rejected version 1, so the add-on answers no prompts until this key passes its check.");
        await Expect(page.Locator("#status-version")).ToHaveTextAsync("2");
    }
}
