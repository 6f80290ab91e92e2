using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using AddOnEvents.Common.Net;

namespace AddOnEvents.Ingress.Webhooks;

/// <summary>Where webhooks may go; bound from the <c>Webhooks</c> section.</summary>
public sealed class WebhookOptions
{
    public const string SectionName = "Webhooks";

    /// <summary>
    /// Lets webhook URLs name loopback, private and link-local addresses. Off by default, because a tenant who may
    /// choose any URL could otherwise make Ingress send requests into the operator's own network.
    /// </summary>
    public bool AllowPrivateAddresses { get; set; }
}

/// <summary>
/// The address checks of webhook URLs: once when a developer saves the URL, and again on every connection, after
/// name resolution, so a host name that later resolves to an internal address is refused too.
/// </summary>
public static class WebhookAddresses
{
    /// <summary>Longest webhook URL accepted.</summary>
    public const int MaxUrlLength = 2048;

    /// <summary>
    /// Returns what is wrong with a webhook URL, or null when it may be stored: its form first, then, unless private
    /// addresses are allowed, where its host name resolves now.
    /// </summary>
    public static async Task<string?> CheckAsync(string url, bool allowPrivate, CancellationToken cancellationToken) =>
        Problem(url, allowPrivate) ?? (allowPrivate ? null : await ResolvedProblemAsync(url, cancellationToken));

    /// <summary>Returns what is wrong with the form of a webhook URL, or null, without resolving its host name.</summary>
    public static string? Problem(string url, bool allowPrivate)
    {
        if (url.Length > MaxUrlLength)
        {
            return $"url must be at most {MaxUrlLength} characters long.";
        }

        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttps && uri.Scheme != Uri.UriSchemeHttp))
        {
            return "url must be an absolute https:// URL, or null to remove the webhook.";
        }

        if (uri.UserInfo.Length > 0)
        {
            return "url must not contain a user name or password; sign-in data does not belong in a webhook URL.";
        }

        string host = HostOf(uri);
        bool loopback = Loopback.IsLoopbackHost(host) || LoopbackNames.Contains(host) || host.EndsWith(".localhost", StringComparison.Ordinal);
        if (uri.Scheme == Uri.UriSchemeHttp && !(loopback && allowPrivate))
        {
            return "url must use https://; http:// is accepted only for a loopback address where the operator allows private addresses.";
        }

        if (!allowPrivate && (loopback || (IPAddress.TryParse(host, out var address) && !IsPublic(address))))
        {
            return $"url names a loopback, private or link-local address ({uri.Host}), which this server does not send webhooks to. Use a public host name.";
        }

        return null;
    }

    /// <summary>
    /// Returns what is wrong with where a webhook URL's host name points now, or null. A name that does not
    /// resolve yet passes, because every delivery checks the addresses again.
    /// </summary>
    public static async Task<string?> ResolvedProblemAsync(string url, CancellationToken cancellationToken)
    {
        var uri = new Uri(url);
        IPAddress[] addresses;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            addresses = await AddressesOfAsync(HostOf(uri), timeout.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }

        return addresses.Any(a => !IsPublic(a))
            ? $"url names {uri.Host}, which resolves to a loopback, private or link-local address. Use a host with public addresses only."
            : null;
    }

    /// <summary>
    /// Tells whether an address is reachable on the public internet, as opposed to this host, a private network, a
    /// documentation or other reserved range, or an IPv6 form that carries such an IPv4 address.
    /// </summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.AddressFamily == AddressFamily.InterNetworkV6 && EmbeddedIPv4(address) is { } embedded)
        {
            address = embedded;
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.None)
            || IsOwnAddress(address))
        {
            return false;
        }

        byte[] b = address.GetAddressBytes();
        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            // 64:ff9b:1::/48 is NAT64 for local networks, whose translators may reach private IPv4 addresses. Its
            // prefix length varies, so where the IPv4 address sits is unknown, and the whole range is refused.
            return !(address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast || (b[0] & 0xFE) == 0xFC
                || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8)
                || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && b[4] == 0x00 && b[5] == 0x01));
        }

        return !(b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224
            || (b[0] == 100 && b[1] >= 64 && b[1] < 128)
            || (b[0] == 169 && b[1] == 254)
            || (b[0] == 172 && b[1] >= 16 && b[1] < 32)
            || (b[0] == 192 && b[1] == 0 && (b[2] == 0 || b[2] == 2))
            || (b[0] == 192 && b[1] == 168)
            || (b[0] == 198 && (b[1] == 18 || b[1] == 19))
            || (b[0] == 198 && b[1] == 51 && b[2] == 100)
            || (b[0] == 203 && b[1] == 0 && b[2] == 113));
    }

    /// <summary>Returns the address a host names, or the addresses its name resolves to.</summary>
    private static async Task<IPAddress[]> AddressesOfAsync(string host, CancellationToken cancellationToken) =>
        IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, cancellationToken);

    /// <summary>Names that resolve to this machine on common systems without being spelled "localhost".</summary>
    private static readonly HashSet<string> LoopbackNames = new(StringComparer.Ordinal)
    {
        "localhost.localdomain", "ip6-localhost", "ip6-loopback",
    };

    /// <summary>The host in the form that name resolution uses: IDN-mapped, lower case, without brackets or a trailing dot.</summary>
    private static string HostOf(Uri uri) => uri.IdnHost.Trim('[', ']').TrimEnd('.').ToLowerInvariant();

    /// <summary>
    /// The IPv4 address inside an IPv6 address that carries one: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    /// (::a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
    /// </summary>
    private static IPAddress? EmbeddedIPv4(IPAddress address)
    {
        byte[] b = address.GetAddressBytes();
        bool ZeroUpTo(int end) => b.Take(end).All(x => x == 0);
        if (address.IsIPv4MappedToIPv6 || (ZeroUpTo(12) && !address.Equals(IPAddress.IPv6Any) && !address.Equals(IPAddress.IPv6Loopback))
            || (ZeroUpTo(8) && b[8] == 0xFF && b[9] == 0xFF && b[10] == 0 && b[11] == 0)
            || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && b.Skip(4).Take(8).All(x => x == 0)))
        {
            return new IPAddress(b[12..16]);
        }

        return b[0] == 0x20 && b[1] == 0x02 ? new IPAddress(b[2..6]) : null;
    }

    private static bool IsOwnAddress(IPAddress address)
    {
        try
        {
            return NetworkInterface.GetAllNetworkInterfaces()
                .SelectMany(nic => nic.GetIPProperties().UnicastAddresses)
                .Any(unicast => unicast.Address.Equals(address));
        }
        catch (NetworkInformationException)
        {
            return false;
        }
    }

    /// <summary>
    /// Connects to the webhook host's first allowed address, refusing addresses that are not public unless the
    /// operator allows them.
    /// </summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, bool allowPrivate, CancellationToken cancellationToken)
    {
        string host = context.DnsEndPoint.Host;
        var addresses = await AddressesOfAsync(host.Trim('[', ']'), cancellationToken);
        var allowed = addresses.Where(a => allowPrivate || IsPublic(a)).ToArray();
        if (allowed.Length == 0)
        {
            throw new HttpRequestException($"The webhook host {host} resolves only to loopback, private or link-local addresses, which are not allowed. Use a public host name.");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(allowed, context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
