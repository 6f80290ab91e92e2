using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using AddOnEvents.Ingress.Webhooks;

namespace AddOnEvents.Tests.Unit;

public sealed class WebhookAddressTests
{
    [Theory]
    [InlineData("https://169.254.169.254/latest/meta-data")]
    [InlineData("https://10.0.0.5:8443/admin")]
    [InlineData("https://172.20.1.1/")]
    [InlineData("https://192.168.1.10/")]
    [InlineData("https://100.64.0.1/")]
    [InlineData("https://127.0.0.1/")]
    [InlineData("https://localhost/")]
    [InlineData("https://[::1]/")]
    [InlineData("https://[fd00::1]/")]
    [InlineData("https://[fe80::1]/")]
    [InlineData("https://[::ffff:10.0.0.1]/")]
    [InlineData("https://localhost./")]
    [InlineData("https://LOCALHOST./")]
    [InlineData("https://foo.localhost/")]
    [InlineData("https://localhost.localdomain/")]
    [InlineData("https://ip6-localhost/")]
    [InlineData("https://127.0.0.1./")]
    [InlineData("https://127\u30020\u30020\u30021/")]
    [InlineData("https://[::127.0.0.1]/")]
    [InlineData("https://[::ffff:0:127.0.0.1]/")]
    [InlineData("https://[64:ff9b::7f00:1]/")]
    [InlineData("https://[64:ff9b:1::7f00:1]/")]
    [InlineData("https://[64:ff9b:1:7f00:1::]/")]
    [InlineData("https://[2002:7f00:1::]/")]
    [InlineData("https://[2001:db8::1]/")]
    [InlineData("https://192.0.2.1/")]
    [InlineData("https://198.51.100.7/")]
    [InlineData("https://203.0.113.9/")]
    [InlineData("http://127.0.0.1:8080/hook")]
    [InlineData("http://hooks.example.com/")]
    [InlineData("ftp://hooks.example.com/")]
    [InlineData("https://user:secret@hooks.example.com/")]
    [InlineData("not a url")]
    public void InternalOrPlainUrlIsRejected(string url)
    {
        Assert.NotNull(WebhookAddresses.Problem(url, allowPrivate: false));
    }

    [Theory]
    [InlineData("https://hooks.example.com/addonevents")]
    [InlineData("https://93.184.215.14/hook")]
    [InlineData("https://[2606:4700::1111]/hook")]
    public void PublicHttpsUrlIsAccepted(string url)
    {
        Assert.Null(WebhookAddresses.Problem(url, allowPrivate: false));
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080/hook")]
    [InlineData("https://10.0.0.5/hook")]
    public void OperatorMayAllowPrivateAddresses(string url)
    {
        Assert.Null(WebhookAddresses.Problem(url, allowPrivate: true));
    }

    [Fact]
    public void OverlongUrlIsRejected()
    {
        string url = "https://hooks.example.com/" + new string('a', WebhookAddresses.MaxUrlLength);

        Assert.Contains("at most 2048 characters", WebhookAddresses.Problem(url, allowPrivate: false), StringComparison.Ordinal);
    }

    [Fact]
    public void OwnInterfaceAddressesAreNotPublic()
    {
        var own = NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(nic => nic.GetIPProperties().UnicastAddresses)
            .Select(unicast => unicast.Address)
            .ToList();

        Assert.NotEmpty(own);
        Assert.All(own, address => Assert.False(WebhookAddresses.IsPublic(address), $"{address} counts as public"));
    }

    [Fact]
    public async Task NameResolvingToLoopbackIsRejected()
    {
        string? problem = await WebhookAddresses.ResolvedProblemAsync("https://localhost/hook", default);

        Assert.NotNull(problem);
    }

    [Fact]
    public void PlainHttpStaysLimitedToLoopback()
    {
        Assert.NotNull(WebhookAddresses.Problem("http://10.0.0.5/hook", allowPrivate: true));
    }

    [Fact]
    public async Task LoopbackConnectionIsRejected()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = (context, token) => WebhookAddresses.ConnectAsync(context, allowPrivate: false, token),
        };
        using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };

        var error = await Assert.ThrowsAsync<HttpRequestException>(() => client.GetAsync($"http://127.0.0.1:{port}/"));
        bool reached = listener.Pending();

        Assert.Contains("private or link-local addresses, which are not allowed", error.Message + error.InnerException?.Message, StringComparison.Ordinal);
        Assert.False(reached);
    }
}
