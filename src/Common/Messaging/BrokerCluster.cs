using System.Globalization;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Messaging;

/// <summary>
/// Applies RabbitMq:ClusterNodes. MassTransit then opens each connection to the next node of the list, so when the
/// node a service is connected to goes away, the service reconnects to another node without a restart.
/// </summary>
/// <remarks>
/// The work queues are quorum queues, replicated on every node of the cluster. With publisher confirms on, RabbitMQ
/// confirms a message routed to a quorum queue only once a quorum of the queue's replicas has accepted it
/// (https://www.rabbitmq.com/docs/confirms, "When Will Published Messages Be Confirmed by the Broker?"). So the 202
/// that Ingress returns after the confirm means that the message survives the loss of any one node of three.
/// </remarks>
internal static class BrokerCluster
{
    public static void Configure(IRabbitMqHostConfigurator host, RabbitMqOptions options)
    {
        if (options.ClusterNodes.Count == 0)
        {
            return;
        }

        host.UseCluster(cluster =>
        {
            foreach (string node in options.ClusterNodes)
            {
                cluster.Node(node);
            }
        });
    }

    /// <summary>
    /// Returns the node list with comma-separated entries split. The configuration binder fills the list from the
    /// array form only, so a single value (as an environment variable carries it) is read here.
    /// </summary>
    public static IReadOnlyList<string> SplitNodeList(IReadOnlyList<string> bound, string? singleValue)
    {
        IEnumerable<string> entries = string.IsNullOrWhiteSpace(singleValue) ? bound : [singleValue];
        return [.. entries.SelectMany(entry => entry.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))];
    }

    /// <summary>Tells whether an entry is "host" or "host:port" as MassTransit parses it; IPv6 literals are not accepted.</summary>
    public static bool IsNodeAddress(string node)
    {
        string[] parts = node.Split(':');
        return parts[0].Length > 0
            && !parts[0].Any(char.IsWhiteSpace)
            && (parts.Length == 1
                || (parts.Length == 2
                    && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int port)
                    && port is >= 1 and <= 65535));
    }
}

/// <summary>Rejects a RabbitMq:ClusterNodes entry that MassTransit could not parse, at start rather than at the first connection.</summary>
internal sealed class BrokerClusterValidator : IValidateOptions<RabbitMqOptions>
{
    public ValidateOptionsResult Validate(string? name, RabbitMqOptions options)
    {
        var invalid = options.ClusterNodes.Where(node => !BrokerCluster.IsNodeAddress(node)).ToList();
        return invalid.Count == 0
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail(
                $"RabbitMq:ClusterNodes has entries that are not host or host:port (port 1-65535): '{string.Join("', '", invalid)}'. "
                + "List the nodes separated by commas, for example rabbit1:5672,rabbit2:5672,rabbit3:5672.");
    }
}
