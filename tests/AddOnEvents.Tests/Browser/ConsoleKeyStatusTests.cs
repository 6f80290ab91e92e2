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
}
