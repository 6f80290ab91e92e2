using System.Net;
using System.Security.Cryptography;
using AddOnEvents.Common.Storage;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Ingress.Endpoints;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Playwright;

namespace AddOnEvents.Tests.Browser;

/// <summary>
/// The whole system as <see cref="SystemFixture"/> runs it, plus a demo app whose credentials Ingress holds for the
/// demo host backend (POST /demo/token), and Debian's Chromium driven by Playwright. Playwright never downloads a
/// browser: it starts /usr/bin/chromium through its node driver, which ships inside the NuGet package.
/// </summary>
public sealed class BrowserFixture : SystemFixture
{
    public const string ChromiumPath = "/usr/bin/chromium";

    /// <summary>Bound for every Playwright action and expectation.</summary>
    public static readonly TimeSpan Timeout = Patience;

    private static readonly string[] ChromiumArgs =
    [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
    ];

    private IPlaywright? _playwright;
    private WebApplication? _hostPages;
    private string _hostPageHtml = "";

    /// <summary>Origin of the server that serves another site's host page. Ingress allows it.</summary>
    public string HostPageOrigin { get; private set; } = "";

    public IBrowser Browser { get; private set; } = null!;

    /// <summary>The app whose credentials Ingress holds as Demo:AppId and Demo:AppSecret.</summary>
    public TestApp DemoApp { get; private set; } = null!;

    /// <summary>The key that the fake upstream accepts for <see cref="DemoApp"/>.</summary>
    public string DemoKey { get; } = "sk-demo-" + Guid.NewGuid().ToString("N");

    /// <summary>Where screenshots go: ADDONEVENTS_TEST_SCREENSHOTS (test.sh sets it and prints it), else beside the tests.</summary>
    public string ScreenshotDirectory { get; } =
        Environment.GetEnvironmentVariable("ADDONEVENTS_TEST_SCREENSHOTS") is { Length: > 0 } configured
            ? configured
            : Path.Combine(AppContext.BaseDirectory, "screenshots");

    public override async Task InitializeAsync()
    {
        if (!File.Exists(ChromiumPath))
        {
            throw new InvalidOperationException(
                $"{ChromiumPath} is missing. test.sh installs Debian's chromium package (scripts/infra.sh, infra_install).");
        }

        // Ingress reads Demo:* once at start, so the app must exist first. run.sh creates it through the admin API and
        // restarts Ingress; here it goes into the database through the same AppStore, before Ingress starts.
        DemoApp = await CreateDemoAppAsync();

        // A real server on another loopback port. A page that Playwright itself fulfilled could not load Ingress's
        // script in Chromium.
        _hostPages = await StartHostPageServerAsync();
        await base.InitializeAsync();

        // Playwright's own install step would fetch a browser; this run uses Debian's and must not try.
        Environment.SetEnvironmentVariable("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
        Assertions.SetDefaultExpectTimeout((float)Timeout.TotalMilliseconds);
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ChromiumArgs,
            Timeout = (float)Timeout.TotalMilliseconds,
        });
        Directory.CreateDirectory(ScreenshotDirectory);
    }

    public override async Task DisposeAsync()
    {
        if (Browser is not null)
        {
            await Browser.CloseAsync();
        }

        _playwright?.Dispose();
        if (_hostPages is not null)
        {
            await _hostPages.DisposeAsync();
        }

        await base.DisposeAsync();
    }

    public override Dictionary<string, string?> IngressSettings() => new(base.IngressSettings())
    {
        [DemoHostEndpoints.AppIdSetting] = DemoApp.AppId,
        [DemoHostEndpoints.AppSecretSetting] = DemoApp.Secret,

        // The shortest lifetime Ingress allows, so the page renews its token within a test.
        ["Auth:DefaultTokenLifetimeSeconds"] = "30",
        ["Ingress:AllowedOrigins:1"] = HostPageOrigin,
    };

    /// <summary>Opens <paramref name="path"/> of Ingress in a fresh browser context (its own storage and cookies).</summary>
    public async Task<BrowserPage> OpenAsync(string path, int width = 1280, int height = 860)
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = IngressUrl.ToString(),
            ViewportSize = new ViewportSize { Width = width, Height = height },
            Locale = "en-US",
            TimezoneId = "UTC",
            ReducedMotion = ReducedMotion.Reduce,
        });
        context.SetDefaultTimeout((float)Timeout.TotalMilliseconds);
        var page = await context.NewPageAsync();
        var browserPage = new BrowserPage(context, page, ScreenshotDirectory);
        await page.GotoAsync(path);
        return browserPage;
    }

    private async Task<WebApplication> StartHostPageServerAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Run(context =>
        {
            context.Response.ContentType = "text/html; charset=utf-8";
            return context.Response.WriteAsync(_hostPageHtml);
        });
        await app.StartAsync();
        HostPageOrigin = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return app;
    }

    /// <summary>
    /// Opens <paramref name="html"/> as a page of another site than Ingress (<see cref="HostPageOrigin"/>), so the page
    /// calls Ingress across origins as an embedding host page does.
    /// </summary>
    public async Task<BrowserPage> OpenOnHostPageOriginAsync(string html)
    {
        _hostPageHtml = html;
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions { Locale = "en-US", TimezoneId = "UTC" });
        context.SetDefaultTimeout((float)Timeout.TotalMilliseconds);
        var page = await context.NewPageAsync();
        var browserPage = new BrowserPage(context, page, ScreenshotDirectory);
        await page.GotoAsync(HostPageOrigin + "/editor.html");
        return browserPage;
    }

    /// <summary>
    /// Gives the demo app a key the fake upstream accepts, unless its current key is that one and active, and switches
    /// its add-on on.
    /// </summary>
    public async Task EnsureDemoKeyActiveAsync()
    {
        using var developer = CreateClient(Basic(DemoApp));
        using var response = await developer.GetAsync($"/api/apps/{DemoApp.AppId}/openai-key");
        string body = await response.Content.ReadAsStringAsync();
        if (response.StatusCode == HttpStatusCode.OK && body.Contains("\"state\":\"active\"", StringComparison.Ordinal))
        {
            // A test may have switched the add-on off; every other test expects it on.
            await SetAddonActiveAsync(DemoApp, true);
            return;
        }

        await RegisterActiveKeyAsync(DemoApp, DemoKey);
    }

    /// <summary>Deletes the demo app's key, so prompts fail with no_key_configured.</summary>
    public async Task DeleteDemoKeyAsync()
    {
        using var developer = CreateClient(Basic(DemoApp));
        using var response = await developer.DeleteAsync($"/api/apps/{DemoApp.AppId}/openai-key");
        Assert.True(response.StatusCode is HttpStatusCode.NoContent or HttpStatusCode.NotFound, $"DELETE returned {response.StatusCode}");
    }

    private async Task<TestApp> CreateDemoAppAsync()
    {
        // A host, not a bare service collection, so the storage setup finds the services a service host provides.
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Mongo:ConnectionString"] = ServiceMongoUri,
            ["Mongo:Database"] = DatabaseName,
        });
        // Creating an app stores no webhook secret, so a cipher with a throwaway key is enough here.
        builder.Services.AddMongoStorage(builder.Configuration).AddMemoryCache().AddLogging()
            .AddSingleton(new WebhookSecretCipher(RandomNumberGenerator.GetBytes(32))).AddSingleton<AppStore>();
        builder.Services.TryAddSingleton(TimeProvider.System);
        using var host = builder.Build();
        var (appId, secret) = await host.Services.GetRequiredService<AppStore>().CreateAsync("Demo host", CancellationToken.None);
        return new TestApp(appId, secret);
    }
}

/// <summary>One page in its own browser context. Uncaught script errors on the page fail the test at dispose.</summary>
public sealed class BrowserPage : IAsyncDisposable
{
    private readonly string _screenshotDirectory;
    private readonly List<string> _pageErrors = [];

    public BrowserPage(IBrowserContext context, IPage page, string screenshotDirectory)
    {
        Context = context;
        Page = page;
        _screenshotDirectory = screenshotDirectory;
        page.PageError += (_, error) =>
        {
            lock (_pageErrors)
            {
                _pageErrors.Add(error);
            }
        };
    }

    public IBrowserContext Context { get; }

    public IPage Page { get; }

    /// <summary>Saves a full-page PNG named <paramref name="name"/> in the screenshot folder.</summary>
    public async Task ScreenshotAsync(string name)
    {
        // Scrolled back to the top, so the screenshot starts where a reader starts.
        await Page.EvaluateAsync("() => window.scrollTo(0, 0)");
        await Page.ScreenshotAsync(new PageScreenshotOptions
        {
            Path = Path.Combine(_screenshotDirectory, name + ".png"),
            FullPage = true,
            Animations = ScreenshotAnimations.Disabled,
        });
    }

    public async ValueTask DisposeAsync()
    {
        await Context.CloseAsync();
        lock (_pageErrors)
        {
            Assert.True(_pageErrors.Count == 0, "The page threw: " + string.Join(" | ", _pageErrors));
        }
    }
}

[CollectionDefinition(Name)]
public sealed class BrowserCollectionDefinition : ICollectionFixture<BrowserFixture>
{
    public const string Name = "browser";
}
