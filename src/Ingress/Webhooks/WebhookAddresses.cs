using System.Net;
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
    /// <summary>Returns what is wrong with a webhook URL, or null when it may be stored.</summary>
    public static string? Problem(string url, bool allowPrivate)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttps && uri.Scheme != Uri.UriSchemeHttp))
        {
            return "url must be an absolute https:// URL, or null to remove the webhook.";
        }

        bool loopback = Loopback.IsLoopbackHost(uri.Host);
        if (uri.Scheme == Uri.UriSchemeHttp && !(loopback && allowPrivate))
        {
            return "url must use https://; http:// is accepted only for a loopback address where the operator allows private addresses.";
        }

        if (!allowPrivate && (loopback || (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var address) && !IsPublic(address))))
        {
            return $"url names a loopback, private or link-local address ({uri.Host}), which this server does not send webhooks to. Use a public host name.";
        }

        return null;
    }

    /// <summary>Tells whether an address is reachable on the public internet, as opposed to this host, a private network or a reserved range.</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.None))
        {
            return false;
        }

        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            byte first = address.GetAddressBytes()[0];
            return !(address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast || (first & 0xFE) == 0xFC);
        }

        byte[] b = address.GetAddressBytes();
        return !(b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224
            || (b[0] == 100 && b[1] >= 64 && b[1] < 128)
            || (b[0] == 169 && b[1] == 254)
            || (b[0] == 172 && b[1] >= 16 && b[1] < 32)
            || (b[0] == 192 && b[1] == 0 && b[2] == 0)
            || (b[0] == 192 && b[1] == 168)
            || (b[0] == 198 && (b[1] == 18 || b[1] == 19)));
    }

    /// <summary>
    /// Connects to the webhook host's first allowed address, refusing addresses that are not public unless the
    /// operator allows them.
    /// </summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, bool allowPrivate, CancellationToken cancellationToken)
    {
        string host = context.DnsEndPoint.Host;
        var addresses = IPAddress.TryParse(host.Trim('[', ']'), out var literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(host, cancellationToken);
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
