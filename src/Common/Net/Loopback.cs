using System.Net;

namespace AddOnEvents.Common.Net;

public static class Loopback
{
    /// <summary>
    /// Tells whether a host name or address stays on this machine: <c>localhost</c>, 127.0.0.0/8 or ::1
    /// (with or without the brackets of a URL).
    /// </summary>
    public static bool IsLoopbackHost(string host)
    {
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address);
    }
}
